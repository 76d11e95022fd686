"""Analysis: metrics, per-epoch trajectories, loss-metric correlations, significance tests, tables, figures."""
