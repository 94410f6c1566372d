"""--mode=study: the grid of folds x seeds x label budgets x variants, its paired
statistics and report (see runner.py)."""
