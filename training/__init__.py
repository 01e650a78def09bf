"""Training: the run's settings, the one fit loop every method trains through, task records and resume points,
and the isolated methods' task sequence (alone or spread over torchrun's processes)."""
