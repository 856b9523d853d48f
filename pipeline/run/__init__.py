"""The run: producer, workers and sink in one task group; sweeps of several models; the run lock."""
