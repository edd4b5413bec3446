"""YAML files read as node trees, so that errors can say which line is wrong.

Loaded values (`yaml.safe_load`) are plain dicts, lists and scalars that no longer know
where they were written. The nodes of `yaml.compose` do know their line, so the readers of
thresholds and grid files walk nodes, turn a node into a value only where they need one,
and report `<path>: line <n>: <what is wrong>`. Walking nodes also lets them refuse
duplicate keys, which loading resolves silently by keeping the last one.

Each function takes the error class to raise (`LLMPerfUsageError` or a subclass, such as
`grid.GridError`), so that each reader raises its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from pytest_llmperf.errors import LLMPerfUsageError, where


def compose(
    text: str, path: Path, error: type[LLMPerfUsageError] = LLMPerfUsageError
) -> yaml.Node | None:
    """The node tree of one YAML document, None if it is empty; bad syntax raises `error`.

    The message is `<path>: line <n>: invalid YAML: <problem>`.
    """
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or exc
        raise error(f"{where(path, line)}: invalid YAML: {problem}") from exc
    except RecursionError:  # the composer recurses once per nested [ or {
        raise error(f"{path}: invalid YAML: nested too deeply") from None


def node_line(node: yaml.Node) -> int:
    """The 1-based line where `node` starts."""
    return node.start_mark.line + 1


def node_error(
    path: Path,
    node: yaml.Node | None,
    what: str,
    error: type[LLMPerfUsageError] = LLMPerfUsageError,
) -> LLMPerfUsageError:
    """`error("<path>: line <n>: <what>")` at `node`'s line (line 1 without a node), to raise."""
    return error(f"{where(path, node_line(node) if node is not None else 1)}: {what}")


def node_value(
    path: Path, node: yaml.Node, error: type[LLMPerfUsageError] = LLMPerfUsageError
) -> Any:
    """The plain value of `node` and everything under it, as `yaml.safe_load` makes it."""
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise node_error(path, node, f"cannot read value: {exc}", error) from exc


def mapping_items(
    path: Path,
    node: yaml.Node,
    what: str,
    error: type[LLMPerfUsageError] = LLMPerfUsageError,
) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """`(key, key node, value node)` of a mapping, in order; `what` is raised if `node` is not one.

    Keys must be strings, and each may appear once: PyYAML silently keeps the last of
    duplicate keys, and a setting or bound silently lost is worse than an error.
    """
    if not isinstance(node, yaml.MappingNode):
        raise node_error(path, node, what, error)
    items: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = node_value(path, key_node, error) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            raise node_error(path, key_node, f"keys must be strings, got {key!r}", error)
        if key in seen:
            raise node_error(path, key_node, f"duplicate key {key!r}", error)
        seen.add(key)
        items.append((key, key_node, value_node))
    return items
