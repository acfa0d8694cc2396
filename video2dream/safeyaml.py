"""Settings files read as plain data that cannot hang or crash the tool.

`--config FILE`, `--preset PATH.yaml` and a run folder's `settings.yaml` may be hand-edited, or
written by someone else. yaml.safe_load builds only plain data, but a 2 KB "billion laughs" alias
bomb still expands to gigabytes, a deep nest of brackets is a RecursionError, and a 5,000-digit
integer a ValueError. No settings file needs aliases, more than a few levels or long numbers, so:
aliases are refused, the size and the nesting are bounded, and an over-long integer becomes a
marker that no setting's type check accepts (so the error names the setting it was given for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

MAX_BYTES = 1 << 20  # a resolved settings.yaml is about 2 KB
MAX_DEPTH = 16  # settings need 2 levels (section: name: value)
MAX_DIGITS = 100  # the largest setting (a seed) has 19 digits


class Unsafe(yaml.YAMLError):
    """What this loader refuses: the reason, and the line (1-based) where it is, if known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        return self.reason if self.line is None else f"line {self.line}: {self.reason}"


class LongNumber:
    """An integer of more digits than any setting takes, kept as its size only."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"a number of {self.digits} digits"

    __str__ = __repr__


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise Unsafe(f"an alias (*{event.anchor}) repeats an earlier value; settings files take none "
                         "(write the value out)", event.start_mark.line + 1)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Unsafe(f"values nested more than {MAX_DEPTH} levels deep; settings are "
                             "`section: name: value`", self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_DIGITS:  # int() would refuse past 4,300 digits, float() overflow past 308
            return LongNumber(digits)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load(text: str) -> Any:
    """Plain data from YAML text; Unsafe (a yaml.YAMLError) for what a settings file never needs."""
    if len(text) > MAX_BYTES:
        raise Unsafe(f"{len(text)} characters, more than a settings file's {MAX_BYTES}")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # not reached within MAX_DEPTH; a last guard
        raise Unsafe("values nested too deep") from None
    finally:
        loader.dispose()


def read(path: Path) -> Any:
    """load() of a file, read only up to the size bound: a huge file is refused without reading it."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Unsafe(f"larger than a settings file's {MAX_BYTES // 1024} KiB")
    return load(data.decode("utf-8"))


def kind_of(data: Any) -> str:
    """What a file holds instead of a mapping, in words."""
    if data is None:
        return "nothing (it is empty or null)"
    if isinstance(data, list):
        return "a list"
    return f"a single value ({type(data).__name__})"
