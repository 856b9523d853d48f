"""The dataset: its files and rows, images as sent, prompts per the official protocol, demo and synthetic data."""
