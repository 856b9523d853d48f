"""Sharing a run: a verifiable bundle (manifest, bundle, verify) and a Parquet export."""
