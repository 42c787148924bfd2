"""Rules supplied by the user: one more reason to keep a node in float32, reported like ours.

The protocol is the smallest one a user can write without knowing our internals: a rule looks at one node
and answers a reason (a non-empty string: the node stays float32, and the report shows that string as its
`detail`) or None (no objection; the rest of the chain decides). It is either

- a function `rule(node, context) -> str | None`, named by its `name` attribute or its `__name__`, or
- an object with a method `decide(node, context) -> str | None`, named by its `name` attribute or its class
  name, or
- a string "package.module:attribute" (or "package.module.attribute") naming one of those, imported when the
  options are built: the form a JSON Olive workflow or the command line can give.

`node` is an `onnx_ir.Node` (`op_type`, `name`, `domain`, `attributes`, `inputs` and `outputs` as
`onnx_ir.Value`s with `.name`, `.shape`, `.dtype` and `.const_value` for weights); `context` is the rule
chain's `rules.NodeContext`, of which `label` (the node's name in the report), `graph`, `opset` and
`model.model` (the whole `onnx_ir.Model`) are the part meant for user rules. A rule only ever keeps nodes in
float32: it cannot force a node into float16 against a rule that found it unsafe. It runs after the
structural rules and the user's block/include lists, before everything measured (rules.RULES).

A rule name becomes the `rule` of its nodes in the report, so it must not be one of ours (that would make a
user's reason read like a measured one) and the rules of one conversion must be named differently.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from olive_fp16_pass.errors import OptionError
from olive_fp16_pass.precision_plan import CustomRule, Rule

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


class UserRule:
    """One user-supplied rule, resolved: its report name, the callable that decides, and where it came from.

    Rules compare and hash by the user's object (identity), so options holding them stay hashable even when
    that object is not (a dataclass with a `decide` method)."""

    __slots__ = ("decide", "name", "spec", "target")

    def __init__(self, target: Any, *, name: str | None = None, spec: str | None = None) -> None:
        decide = getattr(target, "decide", None)
        if decide is None and not callable(target):
            raise OptionError(
                f"extra_rules: {spec or repr(target)} is neither a function (node, context) -> reason | None nor "
                "an object with such a `decide` method"
            )
        if decide is not None and not callable(decide):
            raise OptionError(f"extra_rules: the `decide` attribute of {spec or repr(target)} is not callable")
        if name is None:
            name = getattr(target, "name", None)
        if name is None:
            name = getattr(target, "__name__", None) if decide is None else type(target).__name__
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise OptionError(
                f"extra_rules: {spec or repr(target)} needs a name (a `name` attribute made of letters, digits "
                f"and _ . : -), got {name!r}"
            )
        if name in {r.value for r in Rule}:
            raise OptionError(f"extra_rules: '{name}' is the name of a built-in rule; give your rule another name")
        self.target = target
        self.decide: Callable[..., Any] = decide if decide is not None else target
        self.name = CustomRule(name)
        self.spec = spec

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserRule) and other.target is self.target and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.target), str(self.name)))

    def __repr__(self) -> str:
        return f"UserRule({self.spec or self.name!s})"

    def to_json(self) -> str:
        """How options and the report show it: the import path it was given as, else its name."""
        return self.spec or str(self.name)


def _import(spec: str) -> Any:
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise OptionError(f"extra_rules: '{spec}' is not an import path: write 'package.module:rule'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError(f"extra_rules: cannot import '{module_name}' for '{spec}' ({exc})") from exc
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise OptionError(f"extra_rules: '{module_name}' has no attribute '{attribute}' (from '{spec}')")
        target = getattr(target, part)
    return target


def resolve(entries: Iterable[Any] | str) -> tuple[UserRule, ...]:
    """The user's rules as `UserRule`s, in order; import paths imported now; names checked unique."""
    if isinstance(entries, str) or callable(entries) or hasattr(entries, "decide"):
        raise OptionError(f"extra_rules: expected a list of rules, got a single one ({entries!r}): write [rule]")
    try:
        items = list(entries)
    except TypeError as exc:
        raise OptionError(f"extra_rules: expected a list of rules, got {type(entries).__name__}") from exc
    rules = []
    for item in items:
        if isinstance(item, UserRule):
            rules.append(item)
        elif isinstance(item, str):
            rules.append(UserRule(_import(item), spec=item))
        else:
            rules.append(UserRule(item))
    names = [str(r.name) for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise OptionError(f"extra_rules: two rules are named {', '.join(map(repr, duplicates))}; names must differ")
    return tuple(rules)


__all__ = ["UserRule", "resolve"]
