"""What every package of the project shares: the error types that end a run with one line, and safe file writes."""
