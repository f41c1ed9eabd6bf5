"""Filter and score plugins, one per module: each has NAME, its reason(s) and pure functions."""
