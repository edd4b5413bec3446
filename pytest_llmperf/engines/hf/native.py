"""transformers' own argument lists, read for `engines.native` (in a child process, as vLLM's
are: reading them imports transformers and torch, which never load into pytest's process at
collection).

- `generate_arguments`: the fields of `GenerationConfig`, the options `model.generate` takes
  (anything else it hands to the model's forward, which refuses what it does not know).
- `from_pretrained_arguments`: the keyword arguments `PreTrainedModel.from_pretrained`
  declares, those it reads from its `**kwargs` (read from its source: it pops them by name),
  and the attributes every model configuration has (the rest of its `**kwargs` override the
  model's configuration, whose attributes depend on the model: not known before it loads).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

#: `from_pretrained` takes these and ignores them (transformers 5 retired them); a setup
#: that passes them still loads, so they are not refused here.
_RETIRED = r"for name in \[([^\]]*)\]"


def generate_arguments(settings: dict[str, Any]) -> dict[str, str]:
    """The fields of transformers' `GenerationConfig`."""
    from transformers import GenerationConfig

    fields = vars(GenerationConfig())  # type: ignore[no-untyped-call]
    return {name: "any" for name in fields if not name.startswith("_")}


def from_pretrained_arguments(settings: dict[str, Any]) -> dict[str, str]:
    """The keyword arguments transformers' `from_pretrained` takes (see the module docstring)."""
    from transformers import PreTrainedConfig, PreTrainedModel

    method = PreTrainedModel.from_pretrained
    names = {
        p.name
        for p in inspect.signature(method).parameters.values()
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "cls")
    }
    source = inspect.getsource(method)
    names.update(re.findall(r"kwargs\.pop\(\s*[\"'](\w+)[\"']", source))
    for listed in re.findall(_RETIRED, source):
        names.update(re.findall(r"[\"'](\w+)[\"']", listed))
    names.update(PreTrainedConfig().to_dict())
    return {name: "any" for name in sorted(names) if not name.startswith("_")}
