"""`python -m pytest_llmperf.tinymodel [tiny|tiny-trained]`: build a built-in model once and
print its directory (the models themselves live in `pytest_llmperf.models`)."""

from __future__ import annotations

from pytest_llmperf.models.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
