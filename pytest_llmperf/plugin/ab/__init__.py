"""A/B in one test: `llmperf.compare(a, b, workload)` (`compare`), its turns (`turns`); the
metrics it reports are defined in `pytest_llmperf.measure.turns`."""
