"""`python -m pytest_llmperf.models [tiny|tiny-trained]` (also `python -m
pytest_llmperf.tinymodel`): build a built-in model once and print its directory, e.g. to start
a server on it: `--model "$(python -m pytest_llmperf.models tiny-trained)"`."""

from __future__ import annotations

import sys

from pytest_llmperf.models.names import TINY_MODEL_NAME, TRAINED_MODEL_NAME, resolve_model


def main(argv: list[str] | None = None) -> int:
    names = (TINY_MODEL_NAME, TRAINED_MODEL_NAME)
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] not in names):
        print(f"usage: python -m pytest_llmperf.models [{'|'.join(names)}]", file=sys.stderr)
        return 2
    print(resolve_model(args[0] if args else TINY_MODEL_NAME))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
