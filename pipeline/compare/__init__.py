"""Several runs side by side: leaderboard with intervals, exact paired tests, flipped items, plots."""
