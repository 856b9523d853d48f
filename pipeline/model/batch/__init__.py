"""The Batch API: its HTTP calls, the run's batch files and state, and the batch responder."""
