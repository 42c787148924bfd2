"""Which ops the CUDA execution provider has kernels for, per opset and element type, without a GPU.

A float16 node runs on the GPU only if onnxruntime registered a CUDA kernel for its op, opset and float16;
otherwise onnxruntime places it on the CPU and copies its tensors across, which costs more than the float16
saved (and the CPU computes float16 in float32 behind Casts). So, for a model meant for
CUDAExecutionProvider, such a node is better left in float32. Whether a kernel exists is a fact of the
onnxruntime build, which CI machines cannot ask (no GPU, CPU onnxruntime): it is read from
`data/cuda_kernels.json`, generated from onnxruntime-gpu by `scripts/gen_cuda_kernel_table.py`, which records
the onnxruntime version and the date in the file.

Matching follows onnxruntime's: a kernel registered for opsets [since, until] serves a node whose op schema
(at the model's opset) has a since-version in that range. Types are the union over the op's type constraints
for that range, as docs/OperatorKernels.md prints them.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, Protocol

import onnx.defs
import onnx_ir as ir

from olive_fp16_pass import op_signatures
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.precision_plan import Precision, Rule

CUDA = "CUDAExecutionProvider"
TABLE_FILE = "cuda_kernels.json"
# Ops that never need a kernel: onnxruntime turns Constant nodes into initializers when it loads a model.
NO_KERNEL_NEEDED = frozenset({("ai.onnx", "Constant")})
_NEWEST = 10_000  # an opset beyond every schema: get_schema answers the newest version
# Ops whose ONNX function body (what onnxruntime runs when no provider has a kernel for a node's types) fails
# to load with float16 inputs: "Type parameter (T) of Optype (Add) bound to different types", the body mixing
# float32 constants in (found by bench/conformance.py on test_mvn). Other function ops are expanded fine.
FUNCTION_BODY_FAILS_IN_FLOAT16 = frozenset({("ai.onnx", "MeanVarianceNormalization")})
_ALIASES = {"float32": "float", "float64": "double", "fp16": "float16", "bf16": "bfloat16"}


def table_domain(domain: str) -> str:
    """The table's name for a domain: the default domain is "ai.onnx" (models write it "" or "ai.onnx")."""
    return "ai.onnx" if domain in ("", "ai.onnx") else domain


@dataclass(frozen=True)
class KernelTable:
    """The CUDA kernel registrations of one onnxruntime version (see the module docstring)."""

    onnxruntime_version: str
    generated_on: str
    source: str
    kernels: Mapping[str, Mapping[str, tuple[tuple[int, int | None, frozenset[str]], ...]]]

    def knows(self, domain: str) -> bool:
        """Whether the table speaks for this domain; custom domains (user kernels) are never judged by it."""
        return table_domain(domain) in self.kernels

    def types_at(self, op_type: str, domain: str, since_version: int) -> frozenset[str] | None:
        """Element types of the kernel serving this op's schema version; None when no kernel serves it."""
        for since, until, types in self.kernels.get(table_domain(domain), {}).get(op_type, ()):
            if since <= since_version and (until is None or since_version <= until):
                return types
        return None

    def has_any_kernel(self, op_type: str, domain: str) -> bool:
        return op_type in self.kernels.get(table_domain(domain), {})


@functools.lru_cache(maxsize=1)
def load_table() -> KernelTable:
    """The shipped table, read once per process (the file is ~60 KB; every conversion asks it)."""
    try:
        text = resources.files("olive_fp16_pass").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
        data = json.loads(text)
        return parse_table(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Float16Error(
            f"olive_fp16_pass/data/{TABLE_FILE} is missing or damaged ({exc}); regenerate it with "
            "scripts/gen_cuda_kernel_table.py"
        ) from exc


def parse_table(data: Mapping[str, Any]) -> KernelTable:
    """A KernelTable from the JSON written by scripts/gen_cuda_kernel_table.py."""
    if data.get("provider") != CUDA:
        raise ValueError(f"table is for {data.get('provider')!r}, not {CUDA}")
    kernels = {
        domain: {
            op_type: tuple(
                (int(since), None if until is None else int(until), frozenset(t for ts in types.values() for t in ts))
                for since, until, types in rows
            )
            for op_type, rows in ops.items()
        }
        for domain, ops in data["kernels"].items()
    }
    return KernelTable(str(data["onnxruntime_version"]), str(data["generated_on"]), str(data["source"]), kernels)


def _since_version(op_type: str, domain: str, opset: int) -> int:
    """The op's schema version a model at `opset` uses (what onnxruntime matches kernels against)."""
    signature = op_signatures.lookup(domain, op_type, opset)
    return signature.since_version if signature is not None else opset


def has_kernel(op_type: str, domain: str, opset: int, dtype: str) -> bool:
    """Whether onnxruntime's CUDA EP has a kernel for `op_type` of `domain` in a model importing `domain` at
    `opset`, for element type `dtype` ("float16", "bfloat16", "float" or "float32", ...)."""
    table = load_table()
    types = table.types_at(op_type, domain, _since_version(op_type, domain, opset))
    return types is not None and _ALIASES.get(dtype, dtype) in types


def ops_without_kernel(domain: str = "ai.onnx") -> list[str]:
    """The ops of `domain` (those the installed onnx defines, not deprecated) with no CUDA kernel at any opset
    or type: in a CUDA session they run on the CPU, or are expanded into their function body."""
    table = load_table()
    wanted = "" if domain in ("", "ai.onnx") else domain
    names = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == wanted and not s.deprecated}
    return sorted(
        op
        for op in names
        if not table.has_any_kernel(op, domain) and (table_domain(domain), op) not in NO_KERNEL_NEEDED
    )


@functools.cache
def _has_function_body(op_type: str, domain: str, opset: int) -> bool:
    """Ops defined by an ONNX function: onnxruntime expands those it has no kernel for into their body."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


# -- the rule ---------------------------------------------------------------------------------------------------


class KernelRuleContext(Protocol):
    """What the rule reads about a node (rules.NodeContext offers these; NodeKernelContext is a plain one)."""

    @property
    def provider(self) -> str | None: ...
    @property
    def domain(self) -> str: ...
    @property
    def opset(self) -> int | None: ...
    @property
    def signature(self) -> op_signatures.OpSignature | None: ...


class KernelDecision(NamedTuple):
    """The rule's answer; fields named like rules.Decision so the classifier can use either."""

    precision: Precision
    rule: Rule
    detail: str
    clamped: tuple = ()


@dataclass(frozen=True)
class NodeKernelContext:
    """A KernelRuleContext from plain values, for callers that have no rule context object."""

    provider: str | None
    domain: str
    opset: int | None
    signature: op_signatures.OpSignature | None


def no_cuda_float16_kernel(node: ir.Node, context: KernelRuleContext) -> KernelDecision | None:
    """For a model meant for CUDAExecutionProvider: keep in float32 a node whose op has no CUDA float16 kernel
    at the model's opset (in float16 it would run on the CPU, with copies).

    Ops defined by an ONNX function are the exception: with no kernel for a float16 node, onnxruntime expands
    the function body, whose ops have CUDA kernels, so float16 stays on the GPU (and float32 could go to a CPU
    float32 kernel instead); except where that body is known to fail in float16 (FUNCTION_BODY_FAILS_IN_FLOAT16).
    Answers nothing for other providers, for domains the table does not cover (custom ops), and for ops whose
    schema allows no float16 at all (the schema rule gives the truer reason for those).
    """
    if context.provider != CUDA or context.signature is None or context.opset is None:
        return None
    return _float16_verdict(node.op_type, context.domain, context.opset)


@functools.lru_cache(maxsize=4096)
def _float16_verdict(op_type: str, domain: str, opset: int) -> KernelDecision | None:
    """The rule's answer for one op at one opset: the same for every node of it, so asked once (hot loop)."""
    signature = op_signatures.lookup(domain, op_type, opset)
    if signature is None:
        return None
    if not any(slot.allows_float16 for slot in (*signature.inputs, *signature.outputs)):
        return None
    table = load_table()
    if not table.knows(domain):
        return None
    types = table.types_at(op_type, domain, signature.since_version)
    if types is not None and "float16" in types:
        return None
    if (table_domain(domain), op_type) not in FUNCTION_BODY_FAILS_IN_FLOAT16 and _has_function_body(
        op_type, domain, opset
    ):
        return None
    return KernelDecision(Precision.FP32, Rule.NO_FP16_KERNEL, f"no CUDA float16 kernel for {op_type} at opset {opset}")


def table_rules_out_float16(provider: str | None, domain: str, node: ir.Node) -> bool:
    """Whether `no_cuda_float16_kernel` keeps this op in float32 for `provider` at every opset: then a
    hand-written "no float16 kernel" exception gives way to the table's reason."""
    if provider != CUDA:
        return False
    table = load_table()
    if not table.knows(domain):
        return False
    key = (table_domain(domain), node.op_type)
    if key not in FUNCTION_BODY_FAILS_IN_FLOAT16 and _has_function_body(node.op_type, domain, _NEWEST):
        return False
    rows = table.kernels[key[0]].get(node.op_type, ())
    return not any("float16" in types for _, _, types in rows)


# -- the report: ops that would leave the GPU whatever their precision ------------------------------------------


def cpu_fallback_risks(
    nodes: Iterable[ir.Node], opsets: Mapping[str, int], provider: str | None
) -> list[dict[str, Any]]:
    """Ops of the model that the CUDA EP has no kernel for at all (any type) at the model's opset.

    onnxruntime runs such nodes on the CPU, with copies to and from the GPU around them; an op defined by an
    ONNX function is expanded into its body instead (whose ops may have CUDA kernels), which is said per entry.
    Empty unless `provider` is CUDAExecutionProvider.
    """
    if provider != CUDA:
        return []
    counts: Counter[tuple[str, str, int]] = Counter()
    for node in nodes:
        domain = table_domain(node.domain)
        opset = opsets.get("" if domain == "ai.onnx" else domain)
        if opset is not None and _leaves_the_gpu(node.op_type, domain, opset):
            counts[(domain, node.op_type, opset)] += 1
    risks = []
    for (domain, op_type, opset), count in sorted(counts.items()):
        expanded = _has_function_body(op_type, domain, opset)
        risks.append(
            {
                "domain": domain,
                "op_type": op_type,
                "opset": opset,
                "nodes": count,
                "function_body": expanded,
                "detail": (
                    f"no CUDA kernel for {op_type} at opset {opset}: "
                    + (
                        "onnxruntime expands its ONNX function body when no provider has a kernel for the "
                        "node's types (in float32 the CPU provider may take it, with copies)"
                        if expanded
                        else "it runs on the CPU, with copies to and from the GPU"
                    )
                ),
            }
        )
    return risks


@functools.lru_cache(maxsize=4096)
def _leaves_the_gpu(op_type: str, domain: str, opset: int) -> bool:
    """No CUDA kernel of any type serves this op at this opset (in a domain the table covers)."""
    table = load_table()
    if not table.knows(domain) or (domain, op_type) in NO_KERNEL_NEEDED:
        return False
    return table.types_at(op_type, domain, _since_version(op_type, domain, opset)) is None


def table_info() -> dict[str, str]:
    """Where the table came from, for reports and benchmarks."""
    table = load_table()
    return {
        "onnxruntime_version": table.onnxruntime_version,
        "generated_on": table.generated_on,
        "source": table.source,
    }


__all__ = [
    "CUDA",
    "FUNCTION_BODY_FAILS_IN_FLOAT16",
    "KernelDecision",
    "KernelTable",
    "NodeKernelContext",
    "cpu_fallback_risks",
    "has_kernel",
    "load_table",
    "no_cuda_float16_kernel",
    "ops_without_kernel",
    "table_info",
    "table_rules_out_float16",
]
