"""The user options of a conversion, declared once; the API, both Olive passes, the CLI and the report derive
theirs from this one dataclass.

The options are frozen and hashable: one value describes what the user asked for, whatever the model, so the
search can use it as a cache key and share it between candidates. Everything that depends on a model (which
names matched, which op types exist) lives in the rule context of one conversion (rules.py), never here.
Values are validated up front, with an error that names the option: `clamp_weights="false"` is a string, not
a boolean, and must not silently clamp.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from olive_fp16_pass import user_rules
from olive_fp16_pass.errors import OptionError
from olive_fp16_pass.user_rules import UserRule

# How an option reads on the command line: "names" (a list), "flag" (a boolean), "io" (no names: all).
_NAMES, _FLAG, _IO, _TEXT, _COUNT = "names", "flag", "io", "text", "count"


def _option(default: Any, description: str, pass_type: Any, cli: str) -> Any:
    return field(default=default, metadata={"description": description, "pass_type": pass_type, "cli": cli})


@dataclass(frozen=True)
class ConversionOptions:
    """What the user asked for; validated and normalized (lists become tuples) when constructed."""

    keep_io_types: bool | tuple[str, ...] = _option(
        False,
        "Keep model inputs/outputs in float32: true for all, or a list of input/output names.",
        bool | list[str],
        _IO,
    )
    op_block_list: tuple[str, ...] | None = _option(None, "Op types to keep in float32.", list[str], _NAMES)
    node_block_list: tuple[str, ...] | None = _option(
        None,
        "Node names (exact, or regular expressions matching the whole name) to keep in float32.",
        list[str],
        _NAMES,
    )
    op_include_list: tuple[str, ...] | None = _option(
        None, "Only these op types go to float16. Mutually exclusive with op_block_list.", list[str], _NAMES
    )
    node_include_list: tuple[str, ...] | None = _option(
        None, "Only nodes whose names match go to float16. Mutually exclusive with node_block_list.", list[str], _NAMES
    )
    clamp_weights: bool = _option(
        False,
        "Clamp weights beyond ±65504 to the float16 range instead of keeping their nodes in float32. "
        "Off by default: clamping silently changes what the model computes.",
        bool,
        _FLAG,
    )
    max_reduction_elements: int | None = _option(
        None,
        "Opt-in: keep in float32 ReduceSum/ReduceMean/ReduceSumSquare/ReduceL2/MatMul/Gemm/Conv nodes that "
        "accumulate over more than this many elements (from the model's static shapes; nodes whose depth is "
        "unknown are not checked, and the report says so). None: no such rule.",
        int,
        _COUNT,
    )
    extra_rules: tuple[UserRule, ...] | None = _option(
        None,
        "Your own rules (user_rules.py): functions rule(node, context) or objects with decide(node, context), "
        "returning a reason to keep the node in float32 or None; in a pass config or on the command line, "
        "import paths 'package.module:rule'. The reason is reported under the rule's name.",
        list[str],
        _NAMES,
    )
    # Not a pass parameter: the Olive passes take it from the accelerator they target.
    provider: str | None = field(
        default="CUDAExecutionProvider",
        metadata={
            "description": "The execution provider the model is meant for: with CUDAExecutionProvider, ops with no "
            "CUDA float16 kernel in onnxruntime stay float32 (cuda_kernels.py). None: no provider-specific rule.",
            "pass_type": None,
            "cli": _TEXT,
        },
    )

    def __post_init__(self) -> None:
        if self.keep_io_types is not True and self.keep_io_types is not False:
            object.__setattr__(self, "keep_io_types", _str_list("keep_io_types", self.keep_io_types))
        for name in ("op_block_list", "node_block_list", "op_include_list", "node_include_list"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _str_list(name, value))
        if self.provider is not None and not isinstance(self.provider, str):
            raise OptionError(f"provider: expected an execution provider name, got {self.provider!r}")
        if self.extra_rules is not None:
            object.__setattr__(self, "extra_rules", user_rules.resolve(self.extra_rules))
        limit = self.max_reduction_elements
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise OptionError(f"max_reduction_elements: expected a whole number >= 1 or None, got {limit!r}")
        if not isinstance(self.clamp_weights, bool):
            raise OptionError(f"clamp_weights: expected true or false, got {self.clamp_weights!r}")
        if self.op_block_list is not None and self.op_include_list is not None:
            raise OptionError("op_block_list and op_include_list are mutually exclusive: give one of them")
        if self.node_block_list is not None and self.node_include_list is not None:
            raise OptionError("node_block_list and node_include_list are mutually exclusive: give one of them")

    # -- derived views ---------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | Any) -> ConversionOptions:
        """From a dict or an object with these attributes (an Olive pass config); other keys are ignored."""
        get = values.get if isinstance(values, Mapping) else lambda name, default: getattr(values, name, default)
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the report records them."""
        return {
            f.name: [_json(v) for v in value] if isinstance(value := getattr(self, f.name), tuple) else value
            for f in dataclasses.fields(self)
        }

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

    def op_type_warnings(self, op_types: Iterable[str]) -> list[str]:
        """Entries of the op lists that name no op type of the model (a typo such as "Matmul" blocks nothing)."""
        present = set(op_types)
        messages = []
        for option in ("op_block_list", "op_include_list"):
            for entry in getattr(self, option) or ():
                if entry in present:
                    continue
                close = [t for t in present if t.lower() == entry.lower()] or difflib.get_close_matches(
                    entry, sorted(present), n=1
                )
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                messages.append(f"{option}: '{entry}' matches no op type in the model{hint}")
        return messages


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ConversionOptions))


def pass_params() -> dict[str, dict[str, Any]]:
    """Name -> (type, default, description) of every option, for the Olive passes' PassConfigParams."""
    return {
        f.name: {"type_": f.metadata["pass_type"], "default_value": f.default, "description": f.metadata["description"]}
        for f in dataclasses.fields(ConversionOptions)
        if f.metadata["pass_type"] is not None
    }


def add_cli_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per option (`--keep-io-types` with no names keeps them all); `skip`: options the command
    declares itself (with the same destination name)."""
    for f in dataclasses.fields(ConversionOptions):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["description"]
        if f.metadata["cli"] == _FLAG:
            parser.add_argument(flag, action="store_true", help=help_text)
        elif f.metadata["cli"] == _TEXT:
            parser.add_argument(
                flag,
                type=_none_or_text,
                default="CUDAExecutionProvider",
                help=help_text + " On the command line: none. Default: %(default)s.",
            )
        elif f.metadata["cli"] == _COUNT:
            parser.add_argument(flag, type=int, default=None, metavar="N", help=help_text)
        elif f.metadata["cli"] == _IO:
            parser.add_argument(flag, nargs="*", default=None, help="no names: keep all; else names to keep")
        else:
            parser.add_argument(flag, nargs="*", default=None, help=help_text)


def _none_or_text(value: str) -> str | None:
    """`--provider none` (or None) is the API's None, not a provider named "None"."""
    return None if value.lower() == "none" else value


def options_from_cli(args: argparse.Namespace) -> ConversionOptions:
    values = {name: getattr(args, name) for name in OPTION_NAMES}
    keep = values["keep_io_types"]
    values["keep_io_types"] = False if keep is None else (True if keep in ([], ["all"]) else keep)
    return ConversionOptions(**values)


def _json(value: Any) -> Any:
    return value.to_json() if isinstance(value, user_rules.UserRule) else value


def _str_list(option: str, value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise OptionError(f"{option}: expected a list of strings, got the string {value!r} (write [{value!r}])")
    try:
        items = tuple(value)
    except TypeError as exc:
        raise OptionError(f"{option}: expected a list of strings, got {type(value).__name__}") from exc
    for item in items:
        if not isinstance(item, str):
            raise OptionError(f"{option}: entries must be strings, got {item!r}")
        if not item:
            raise OptionError(f"{option}: entries must be non-empty strings")
    return items


__all__ = ["OPTION_NAMES", "ConversionOptions", "add_cli_flags", "options_from_cli", "pass_params"]
