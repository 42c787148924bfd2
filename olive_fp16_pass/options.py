"""Conversion options, validated up front so that a bad option fails before any work, naming the option."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from olive_fp16_pass.errors import OptionError


@dataclass
class NamePatterns:
    """Node names given by a user: each entry is an exact name or a regular expression (full match).

    Exact names are tried first so that names holding regex metacharacters (`/block.0/Conv[1]`) still
    match themselves. Entries that match nothing are reported, never silently ignored.
    """

    option: str
    entries: list[str]
    _compiled: list[re.Pattern | None] = field(default_factory=list, repr=False)
    matched: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if not isinstance(entry, str):
                raise OptionError(f"{self.option}: entries must be strings, got {entry!r}")
            try:
                self._compiled.append(re.compile(entry))
            except re.error as exc:
                # Kept as an exact name only; resolved against the graph in check_invalid().
                self._compiled.append(None)
                self._errors = getattr(self, "_errors", {})
                self._errors[entry] = str(exc)

    def match(self, name: str) -> bool:
        hit = False
        for entry, pattern in zip(self.entries, self._compiled, strict=True):
            if name == entry or (pattern is not None and name and pattern.fullmatch(name)):
                self.matched.add(entry)
                hit = True
        return hit

    def unmatched(self) -> list[str]:
        return [entry for entry in self.entries if entry not in self.matched]

    def check_invalid(self) -> None:
        """Raise for entries that are neither a valid regular expression nor an existing node name."""
        for entry, message in getattr(self, "_errors", {}).items():
            if entry not in self.matched:
                raise OptionError(
                    f"{self.option}: '{entry}' is not a valid regular expression ({message}) "
                    "and no node has that exact name"
                )


@dataclass
class ConversionOptions:
    keep_io_types: bool | list[str] = False
    op_block_list: list[str] | None = None
    node_block_list: list[str] | None = None
    op_include_list: list[str] | None = None
    node_include_list: list[str] | None = None
    clamp_weights: bool = False
    # Set by the mixed-precision search, not by users: node label -> (rule, detail) to keep in float32.
    forced_fp32: dict[str, tuple[object, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op_block_list is not None and self.op_include_list is not None:
            raise OptionError("op_block_list and op_include_list are mutually exclusive: give one of them")
        if self.node_block_list is not None and self.node_include_list is not None:
            raise OptionError("node_block_list and node_include_list are mutually exclusive: give one of them")
        if not isinstance(self.keep_io_types, bool):
            self.keep_io_types = _str_list("keep_io_types", self.keep_io_types)
        for name in ("op_block_list", "node_block_list", "op_include_list", "node_include_list"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _str_list(name, value))
        self.node_blocks = NamePatterns("node_block_list", self.node_block_list or [])
        self.node_includes = NamePatterns("node_include_list", self.node_include_list or [])

    def keeps_io(self, name: str) -> bool:
        if isinstance(self.keep_io_types, bool):
            return self.keep_io_types
        return name in self.keep_io_types

    def check_io_names(self, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        if isinstance(self.keep_io_types, bool):
            return
        known = set(inputs) | set(outputs)
        for name in self.keep_io_types:
            if name not in known:
                raise OptionError(
                    f"keep_io_types: '{name}' is not an input or output of the model "
                    f"(inputs: {', '.join(inputs) or '-'}; outputs: {', '.join(outputs) or '-'})"
                )


def _str_list(option: str, value: Iterable[str] | str) -> list[str]:
    if isinstance(value, str):
        raise OptionError(f"{option}: expected a list of strings, got the string {value!r} (write [{value!r}])")
    try:
        items = list(value)
    except TypeError as exc:
        raise OptionError(f"{option}: expected a list of strings, got {type(value).__name__}") from exc
    for item in items:
        if not isinstance(item, str):
            raise OptionError(f"{option}: entries must be strings, got {item!r}")
    return items
