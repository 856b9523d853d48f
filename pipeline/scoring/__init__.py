"""What an answer is worth: the reader, the judge, the official per-row rules, metrics and the summary."""
