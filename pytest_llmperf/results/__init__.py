"""Results: the run folder written during a run, read back, compared and exported."""
