"""Runs read back for the `llmperf` command: where the project keeps them (`project`: pytest's
rootdir and ini, as pytest finds them), how each test ended (`overview`: pytest's verdicts,
engines, models, threshold misses) and the tests a killed run was measuring (`rebuild`)."""
