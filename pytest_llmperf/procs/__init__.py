"""Processes the run starts: the reaper that ends them, managed servers."""
