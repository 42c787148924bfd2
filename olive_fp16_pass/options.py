"""Conversion options, validated up front so that a bad option fails before any work, naming the option."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from olive_fp16_pass.errors import OptionError


@dataclass
class NamePatterns:
    """Node names given by a user: each entry is an exact node name or a regular expression (full match).

    An entry equal to a node's name matches that node (so names holding regex metacharacters, such as
    `/block.0/Conv[1]`, match themselves); any other entry is a regular expression. Exact names are a set
    lookup, so a block list naming half of a 100k-node graph costs O(N), not O(N x entries): matching every
    name against every entry as a regex took 48 s on a 20k-node graph with 10k entries (bench/convert_speed.py).
    Entries that match nothing are reported, never silently ignored.
    """

    option: str
    entries: list[str]
    matched: set[str] = field(default_factory=set, repr=False)
    _exact: set[str] = field(default_factory=set, repr=False)
    _regexes: list[tuple[str, re.Pattern]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if not isinstance(entry, str):
                raise OptionError(f"{self.option}: entries must be strings, got {entry!r}")

    def bind(self, node_names: set[str]) -> None:
        """Split entries into exact names and regular expressions, given the model's node names."""
        self._exact = {entry for entry in self.entries if entry in node_names}
        self._regexes = []
        self._literal_of: dict[str, str] = {}
        for entry in self.entries:
            if entry in self._exact:
                continue
            literal = re.sub(r"\\(.)", r"\1", entry)
            if re.escape(literal) == entry and literal in node_names:
                # re.escape(name): a regex that matches one name only; a set lookup, not a scan of every node
                self._exact.add(literal)
                self._literal_of[literal] = entry
                continue
            try:
                self._regexes.append((entry, re.compile(entry)))
            except re.error as exc:
                raise OptionError(
                    f"{self.option}: '{entry}' is not a valid regular expression ({exc}) and no node has that name"
                ) from exc

    def match(self, name: str) -> bool:
        hit = name in self._exact
        if hit:
            self.matched.add(self._literal_of.get(name, name))
        for entry, pattern in self._regexes:
            if name and pattern.fullmatch(name):
                self.matched.add(entry)
                hit = True
        return hit

    def unmatched(self) -> list[str]:
        return [entry for entry in self.entries if entry not in self.matched]


@dataclass
class ConversionOptions:
    keep_io_types: bool | list[str] = False
    op_block_list: list[str] | None = None
    node_block_list: list[str] | None = None
    op_include_list: list[str] | None = None
    node_include_list: list[str] | None = None
    clamp_weights: bool = False
    # The execution provider the model is meant for: with CUDAExecutionProvider, ops with no CUDA float16 kernel
    # stay float32 (cuda_kernels.py). None: no provider-specific rule.
    provider: str | None = None
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

    def with_forced(self, forced: dict[str, tuple[object, str]]) -> ConversionOptions:
        """The same user options with the search's forced float32 nodes (fresh name matchers)."""
        return dataclasses.replace(self, forced_fp32=dict(forced))

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
