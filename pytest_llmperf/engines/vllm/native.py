"""vLLM's own argument lists, read for `engines.native` in a child process (they import vLLM).

Never imported by pytest's process: `engines.native` runs these functions in a child.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any


def llm_arguments(settings: dict[str, Any]) -> dict[str, str]:
    """What `vllm.LLM(...)` takes: its own keyword parameters and every `EngineArgs` field
    (the rest of its keywords go to `EngineArgs`)."""
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    names = {f.name: "any" for f in dataclasses.fields(EngineArgs)}
    for parameter in inspect.signature(LLM.__init__).parameters.values():
        if parameter.name != "self" and parameter.kind is parameter.KEYWORD_ONLY:
            names.setdefault(parameter.name, "any")
    return names


def server_flags(settings: dict[str, Any]) -> dict[str, str]:
    """Every flag of vLLM's OpenAI server, from the parser it builds for itself."""
    try:  # where vLLM 0.32 keeps it; older releases kept it under entrypoints.openai
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:
        from vllm.entrypoints.openai.cli_args import (  # type: ignore[no-redef,import-not-found]
            make_arg_parser,
        )
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())  # type: ignore[no-untyped-call]
    return {
        option: "flag" if action.nargs == 0 else "any"
        for action in parser._actions
        for option in action.option_strings
    }
