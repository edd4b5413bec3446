"""Measuring: the harness that times an engine's stream, and every metric's definition."""
