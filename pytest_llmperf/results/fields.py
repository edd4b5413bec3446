"""Strict reading of JSON records: each accessor checks a field's type and names the field
in its error (`results/r/tests.jsonl: line 3: thresholds.checked[0].ok: expected true or
false, got a string`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pytest_llmperf.errors import LLMPerfUsageError

Number = float | int
T = TypeVar("T")


class RecordError(LLMPerfUsageError):  # type: ignore[misc]  # UsageError is final in typing only
    """A test record of the wrong shape; the message says which file, entry and field."""


_MISSING = object()


def json_kind(value: object) -> str:
    """A JSON value's type, as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Fields:
    """One JSON object (or list) of a record; each accessor checks a field's type and
    names the field in its error (`thresholds.checked[0].ok`)."""

    def __init__(self, data: dict[str, Any], source: str, path: str) -> None:
        self._data = data
        self._source = source
        self._path = path

    @classmethod
    def of(cls, value: object, source: str, path: str = "") -> Fields:
        if not isinstance(value, dict):
            where = path or "test record"
            raise RecordError(f"{source}: {where}: expected an object, got {json_kind(value)}")
        return cls(value, source, path)

    def _name(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self._path}[{key}]"
        return f"{self._path}.{key}" if self._path else key

    def error(
        self, key: str | int, expected: str, value: object, got: str | None = None
    ) -> RecordError:
        got = got or json_kind(value)
        return RecordError(f"{self._source}: {self._name(key)}: expected {expected}, got {got}")

    def _get(self, key: str | int) -> object:
        value = self._data.get(str(key), _MISSING)
        if value is _MISSING:
            raise RecordError(f"{self._source}: missing {self._name(key)!r}")
        return value

    def keys(self) -> list[str]:
        return list(self._data)

    def optional(self, read: Callable[[str | int], T], key: str | int) -> T | None:
        """`read(key)`, or None where the field is null or missing (added after v1)."""
        return read(key) if self._data.get(str(key)) is not None else None

    def text(self, key: str | int) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, "a string", value)
        return value

    def integer(self, key: str | int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, "an integer", value)
        return value

    def number(self, key: str | int) -> Number:
        value = self._get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(key, "a number", value)
        return value

    def flag(self, key: str | int) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def obj(self, key: str | int) -> Fields:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, "an object", value)
        return Fields(value, self._source, self._name(key))

    def json_object(
        self, key: str, check: Callable[[object], str | None] | None = None
    ) -> dict[str, Any]:
        """A free-form object; `check` says what each value must be, where that matters."""
        inner = self.obj(key)
        for name, item in inner._data.items():
            expected = check(item) if check is not None else None
            if expected is not None:
                raise inner.error(name, expected, item)
        return inner._data

    def list_of(self, key: str | int, read: Callable[[Fields, int], T]) -> tuple[T, ...]:
        """A list, each item read by `read(the list's fields, index)`."""
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, "a list", value)
        # The items as fields named by their index: `gpus[0]`.
        items = Fields(
            {str(i): item for i, item in enumerate(value)}, self._source, self._name(key)
        )
        return tuple(read(items, i) for i in range(len(value)))
