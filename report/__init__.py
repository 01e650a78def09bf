"""The results of finished runs: the verified per-task report."""
