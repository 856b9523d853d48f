"""model/batch"""
