"""`python -m pytest_llmperf.models [tiny|tiny-trained] [--gguf]` (also `python -m
pytest_llmperf.tinymodel`): build a built-in model once and print its directory, e.g. to start
a server on it: `--model "$(python -m pytest_llmperf.models tiny-trained)"`. With `--gguf`, the
path of its GGUF file (F16, written once with the `gguf` package: `models.gguf`) for llama.cpp."""

from __future__ import annotations

import sys

from pytest_llmperf.models.names import TINY_MODEL_NAME, TRAINED_MODEL_NAME, resolve_model


def main(argv: list[str] | None = None) -> int:
    names = (TINY_MODEL_NAME, TRAINED_MODEL_NAME)
    args = list(sys.argv[1:] if argv is None else argv)
    gguf = "--gguf" in args
    args = [a for a in args if a != "--gguf"]
    if len(args) > 1 or (args and args[0] not in names):
        usage = f"usage: python -m pytest_llmperf.models [{'|'.join(names)}] [--gguf]"
        print(usage, file=sys.stderr)
        return 2
    name = args[0] if args else TINY_MODEL_NAME
    if gguf:
        from pytest_llmperf.models.gguf import gguf_model

        print(gguf_model(name))
    else:
        print(resolve_model(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
