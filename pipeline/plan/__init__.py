"""Before paying: rows, cached answers, tokens, cost and time, and how they are shown."""
