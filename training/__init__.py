"""Per-task training of the isolated methods: context, loops, checkpoints, results and the task sequence."""
