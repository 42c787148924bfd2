"""Matching user-given node names against one model, and remembering which entries matched.

Kept apart from the options: the options are what the user asked for (frozen, hashable, reusable across
models and candidates), a matcher is the state of one conversion (which entries matched which model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from olive_fp16_pass.errors import OptionError


class NamePatterns:
    """Node names given by a user: each entry is an exact node name or a regular expression (full match).

    An entry equal to a node's name matches that node (so names holding regex metacharacters, such as
    `/block.0/Conv[1]`, match themselves); any other entry is a regular expression. Exact names are a set
    lookup, so a block list naming half of a 100k-node graph costs O(N), not O(N x entries): matching every
    name against every entry as a regex took 48 s on a 20k-node graph with 10k entries (bench/convert_speed.py).
    Entries that match nothing are reported, never silently ignored.
    """

    def __init__(self, option: str, entries: Iterable[str], node_names: set[str]) -> None:
        self.option = option
        self.entries = list(entries)
        self.matched: set[str] = set()
        self._exact = {entry for entry in self.entries if entry in node_names}
        self._regexes: list[tuple[str, re.Pattern]] = []
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


__all__ = ["NamePatterns"]
