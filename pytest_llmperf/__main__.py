"""`python -m pytest_llmperf ...`: the `llmperf` command."""

from pytest_llmperf.cli import main

raise SystemExit(main())
