"""Property-based tests (hypothesis) of `convert_float16` on random small graphs.

Each example is a random DAG of 5-40 nodes (opset 17, IR 10) over one activation shape, 2-D [3, 4] or NCHW
[1, 2, 3, 4]: elementwise chains with fan-out (Add/Mul/Sub/Max/Relu/Tanh/Sigmoid/Abs/Neg), MatMul, Gemm (2-D) or
Conv (4-D) with initializer weights that several nodes may share, shared broadcast initializers, existing Casts
(int64 -> FLOAT; FLOAT -> INT64 -> FLOAT; FLOAT -> FLOAT; FLOAT -> FLOAT16 -> FLOAT), integer side branches
(Shape -> Gather, int64 Add), several outputs (some also consumed inside the graph, some int64, sometimes a graph
input passed straight through), optional value_info, and random options: node_block_list (names and regexes),
op_block_list, keep_io_types (bool or a list).

Properties:
1. the result passes the full checker, keeps IR version/opsets/IO names, loads and runs in onnxruntime (CPU);
   non-float IO keeps its type, float IO is float32 exactly where keep_io_types says so;
2. it matches the float32 model within tolerance;
3. the plan is applied as decided (block lists, node precisions) and the Casts are the fewest possible: their
   number equals an independent lower bound, no inserted Cast reads an inserted Cast, one Cast per
   (tensor, target type), each between float16 and float32;
4. the input model is not modified;
5. converting the result again with the same options changes nothing (byte-identical);
6. two conversions give byte-identical models, also in other processes with other hash seeds;
7. a model given as a path (onnx-ir editor) converts to the same model as a ModelProto (protobuf emitter).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.printer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.precision_plan import Rule
from tests.helpers import IR_VERSION, canonical, check_converted, count_ops, init, lower_bound, make_model, run, vi

F32 = TensorProto.FLOAT
F16 = TensorProto.FLOAT16
I64 = TensorProto.INT64
FLOATS = (F32, F16)

LAYOUTS = {"2d": [3, 4], "4d": [1, 2, 3, 4]}
UNARY = ("Relu", "Tanh", "Sigmoid", "Abs", "Neg")
BINARY = ("Add", "Mul", "Sub", "Max")
# Exact in any precision: a float16-representable input gives a float16-representable output, the same in both
# models. FLOAT -> INT64 casts read only such "exact" tensors, so truncation never differs between the models.
EXACT_UNARY = frozenset({"Relu", "Abs", "Neg"})
# Every float tensor that feeds further nodes is bounded by LIMIT (interval arithmetic over the actual weights); a
# node whose bound exceeds it feeds only a Tanh, which squashes its rounding error too. See TOLERANCE.
LIMIT = 8.0
# Tolerance, justified: inputs lie in [-1, 1] and are float16-representable (both models read the same values);
# every tensor read by a node other than a squashing Tanh is bounded by LIMIT = 8, so one float16 rounding errs by
# at most 8 * 2**-11 ~= 4e-3 (half an ulp at 8), usually far less; weights are ~N(0, 0.5) at fan-in 4 (Conv scaled
# to the same gain) and Tanh/Sigmoid contract errors. Measured over 2000 generated examples: largest
# |float16 - float32| on any output 3.5e-3 (99th percentile 2e-3). 2e-2 (the helpers' default) leaves a ~6x margin,
# and real bugs (a wrong or missing Cast, a node dropped or swapped, a constant read in the wrong type) give errors
# of order 0.1-1 on these O(1) values, so they still fail.
TOLERANCE = 2e-2

# More examples for a bug hunt: FP16_PROPERTY_EXAMPLES=2000 pytest tests/test_properties.py
EXAMPLES = int(os.environ.get("FP16_PROPERTY_EXAMPLES", "100"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no "explain": noise here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Case:
    """A random model, its feeds, what the generator knows about it, and random conversion options."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    types: dict[str, int]  # elem type of every tensor of the original model
    plain: bool  # only elementwise/MatMul/Gemm/Conv float nodes: no Casts, no integer tensors
    options: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        feeds = {k: v.tolist() for k, v in self.feeds.items()}
        text = onnx.printer.to_text(self.model)
        return f"Case(options={self.options!r}, plain={self.plain},\nmodel=\n{text}\nfeeds={feeds})"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a failing example
        printer.text(repr(self))

    def classified(self) -> dict[str, str]:
        """Name -> op type of the nodes the converter decides: not Cast, and touching a float tensor."""
        return {
            n.name: n.op_type
            for n in self.model.graph.node
            if n.op_type != "Cast" and any(self.types.get(t) == F32 for t in (*n.input, *n.output))
        }

    def expected_fp32(self) -> dict[str, str]:
        """Blocked node -> the rule that blocks it (the node list is checked before the op list)."""
        node_block = self.options.get("node_block_list") or []
        op_block = self.options.get("op_block_list") or []
        expected = {}
        for name, op in self.classified().items():
            if any(re.fullmatch(entry, name) for entry in node_block):
                expected[name] = Rule.NODE_BLOCK_LIST.value
            elif op in op_block:
                expected[name] = Rule.OP_BLOCK_LIST.value
        return expected

    def keeps(self, name: str) -> bool:
        keep = self.options.get("keep_io_types", False)
        return keep if isinstance(keep, bool) else name in keep


class _Builder:
    def __init__(self, draw, rng: np.random.Generator, shape: list[int]) -> None:
        self.draw, self.rng, self.shape = draw, rng, shape
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}
        self.full: list[str] = []  # float tensors of the activation shape
        self.extra: list[str] = []  # float tensors that only broadcast: second operands of binary ops
        self.ints: list[str] = []  # int64 tensors
        self.bound: dict[str, float] = {}  # max |value| of every float and int tensor
        self.exact: set[str] = set()  # float tensors equal in the float32 and float16 models
        self.arrays: dict[str, np.ndarray] = {}
        self.pools: dict[str, list[str]] = {"mm": [], "conv": []}

    def pick(self, names: list[str]) -> str:
        return self.draw(st.sampled_from(names))

    def node(self, op, inputs, dtype, shape, bound, exact=False, **attrs) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{len(self.nodes)}", **attrs))
        self.types[out], self.shapes[out], self.bound[out] = dtype, shape, bound
        if exact:
            self.exact.add(out)
        return out

    def initializer(self, prefix: str, array: np.ndarray) -> str:
        name = f"{prefix}{len(self.initializers)}"
        self.initializers.append(init(name, array))
        self.types[name] = helper.np_dtype_to_tensor_dtype(array.dtype)
        self.shapes[name] = list(array.shape)
        self.bound[name] = float(np.max(np.abs(array), initial=0.0))
        self.arrays[name] = array
        return name

    def float_result(self, out: str) -> str:
        """Squash a tensor beyond LIMIT with a Tanh, then offer it as an operand."""
        if self.bound[out] > LIMIT:
            out = self.node("Tanh", [out], F32, self.shapes[out], 1.0)
        (self.full if self.shapes[out] == self.shape else self.extra).append(out)
        return out

    def weight(self, kind: str, make) -> str:
        pool = self.pools[kind]
        k = self.draw(st.integers(0, len(pool)), label=f"{kind} weight (len = new)")
        if k == len(pool):
            pool.append(self.initializer("w" if kind == "mm" else "k", make().astype(np.float32)))
        return pool[k]

    def bias(self, size: int) -> list[str]:
        if not self.draw(st.booleans(), label="bias"):
            return []
        return [self.initializer("b", self.rng.uniform(-0.5, 0.5, size).astype(np.float32))]

    # --- steps ------------------------------------------------------------------------------------------------
    def unary(self) -> None:
        x, op = self.pick(self.full), self.draw(st.sampled_from(UNARY))
        bound = 1.0 if op in ("Tanh", "Sigmoid") else self.bound[x]
        self.full.append(self.node(op, [x], F32, self.shape, bound, op in EXACT_UNARY and x in self.exact))

    def binary(self) -> None:
        op, a, b = self.draw(st.sampled_from(BINARY)), self.pick(self.full), self.pick(self.full + self.extra)
        ba, bb = self.bound[a], self.bound[b]
        bound = {"Add": ba + bb, "Sub": ba + bb, "Mul": ba * bb, "Max": max(ba, bb)}[op]
        exact = op == "Max" and a in self.exact and b in self.exact
        self.float_result(self.node(op, [a, b], F32, self.shape, bound, exact))

    def matmul(self) -> None:
        x, n = self.pick(self.full), self.shape[-1]
        w = self.weight("mm", lambda: self.rng.normal(0, 0.5, (n, n)))
        gain = float(np.abs(self.arrays[w]).sum(axis=0).max())
        self.float_result(self.node("MatMul", [x, w], F32, self.shape, self.bound[x] * gain))

    def gemm(self) -> None:
        x, n = self.pick(self.full), self.shape[-1]
        w = self.weight("mm", lambda: self.rng.normal(0, 0.5, (n, n)))
        trans = self.draw(st.booleans(), label="transB")
        bias = self.bias(n)
        gain = float(np.abs(self.arrays[w].T if trans else self.arrays[w]).sum(axis=0).max())
        bound = self.bound[x] * gain + sum(self.bound[b] for b in bias)
        self.float_result(self.node("Gemm", [x, w, *bias], F32, self.shape, bound, transB=int(trans)))

    def conv(self) -> None:
        x, c = self.pick(self.full), self.shape[1]
        # N(0, 0.5) scaled from fan-in 4 (MatMul) to fan-in c*9: the same output variance as a MatMul.
        k = self.weight("conv", lambda: self.rng.normal(0, 0.5 * np.sqrt(4 / (c * 9)), (c, c, 3, 3)))
        bias = self.bias(c)
        gain = float(np.abs(self.arrays[k]).reshape(c, -1).sum(axis=1).max())
        bound = self.bound[x] * gain + sum(self.bound[b] for b in bias)
        out = self.node("Conv", [x, k, *bias], F32, self.shape, bound, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        self.float_result(out)

    def cast_from_int(self) -> None:
        src = self.pick(self.ints)
        self.float_result(self.node("Cast", [src], F32, self.shapes[src], self.bound[src], exact=True, to=F32))

    def float_cast(self) -> None:
        """An existing float -> float Cast: Cast(FLOAT) (identity) or Cast(FLOAT16) -> Cast(FLOAT) (rounding)."""
        x = self.pick(self.full)
        if self.draw(st.booleans(), label="round through float16"):
            x = self.node("Cast", [x], F16, self.shape, self.bound[x], x in self.exact, to=F16)
        self.full.append(self.node("Cast", [x], F32, self.shape, self.bound[x], x in self.exact, to=F32))

    def int_add(self) -> None:
        src, c = self.pick(self.ints), self.draw(st.integers(-2, 2), label="int constant")
        const = self.initializer("c", np.array(c, np.int64))
        self.ints.append(self.node("Add", [src, const], I64, self.shapes[src], self.bound[src] + abs(c)))

    def shape_branch(self) -> None:
        x = self.pick(self.full)
        shape = self.node("Shape", [x], I64, [len(self.shape)], max(self.shape))
        index = self.initializer("g", np.array(self.draw(st.integers(0, len(self.shape) - 1)), np.int64))
        self.ints.append(self.node("Gather", [shape, index], I64, [], max(self.shape), axis=0))

    def round_trip(self) -> None:
        """x * 4 -> Cast(INT64) -> Cast(FLOAT) on an exact x: truncation sees the same value in both models."""
        sources = [t for t in self.full if t in self.exact and 4 * self.bound[t] <= LIMIT]
        if not sources:
            return self.unary()
        x = self.pick(sources)
        if "four" not in self.types:
            self.initializers.append(init("four", np.array(4.0, np.float32)))
            self.types["four"], self.shapes["four"], self.bound["four"] = F32, [], 4.0
            self.extra.append("four")
        scaled = self.node("Mul", [x, "four"], F32, self.shape, 4 * self.bound[x], exact=True)
        as_int = self.node("Cast", [scaled], I64, self.shape, 4 * self.bound[x], to=I64)
        self.ints.append(as_int)
        self.full.append(self.node("Cast", [as_int], F32, self.shape, 4 * self.bound[x], exact=True, to=F32))
        return None


@st.composite
def graphs(draw, plain: bool | None = None) -> Case:
    layout = draw(st.sampled_from(sorted(LAYOUTS)), label="layout")
    shape = LAYOUTS[layout]
    plain = draw(st.booleans(), label="plain") if plain is None else plain
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="weights seed"))
    b = _Builder(draw, rng, shape)

    inputs, feeds = [], {}
    for i in range(draw(st.integers(1, 3), label="float inputs")):
        name = f"x{i}"
        inputs.append(vi(name, F32, shape))
        # float16-representable values: both models read exactly the same input.
        feeds[name] = rng.uniform(-1, 1, shape).astype(np.float16).astype(np.float32)
        b.types[name], b.shapes[name], b.bound[name] = F32, shape, 1.0
        b.full.append(name)
        b.exact.add(name)
    if not plain and draw(st.booleans(), label="int64 input"):
        inputs.append(vi("i0", I64, shape))
        feeds["i0"] = rng.integers(0, 3, shape).astype(np.int64)
        b.types["i0"], b.shapes["i0"], b.bound["i0"] = I64, shape, 2.0
        b.ints.append("i0")
    for _ in range(draw(st.integers(0, 3), label="shared initializers")):
        full = draw(st.booleans(), label="full-shape initializer")
        name = b.initializer("s", rng.uniform(-1, 1, shape if full else shape[-1:]).astype(np.float32))
        (b.full if full else b.extra).append(name)

    layer = b.gemm if layout == "2d" else b.conv
    steps = [b.unary, b.binary, b.matmul, layer]
    if not plain:
        steps += [b.round_trip, b.shape_branch, b.int_add, b.cast_from_int, b.float_cast]
    target = draw(st.integers(5, 38), label="nodes")  # a step adds <= 3 nodes: 5-40 in all
    while len(b.nodes) < target:
        step = draw(st.sampled_from(steps))
        if step in (b.int_add, b.cast_from_int) and not b.ints:
            step = b.unary
        step()

    produced = [o for n in b.nodes for o in n.output]
    consumed = {name for n in b.nodes for name in n.input}
    outputs = [t for t in produced if t not in consumed]
    inner = [t for t in produced if t in consumed and b.types[t] == F32]
    if inner:
        outputs += draw(st.lists(st.sampled_from(inner), unique=True, max_size=3), label="consumed outputs")
    if draw(st.booleans(), label="pass-through output"):
        outputs.append("x0")
    order = {name: i for i, name in enumerate(["x0", *produced])}
    outputs = sorted(set(outputs), key=order.__getitem__)
    value_info = []
    if draw(st.booleans(), label="value_info"):
        candidates = [t for t in produced if t not in outputs]
        if candidates:
            chosen = draw(st.lists(st.sampled_from(candidates), unique=True), label="value_info tensors")
            value_info = [vi(t, b.types[t], b.shapes[t]) for t in sorted(chosen, key=order.__getitem__)]

    model = make_model(
        b.nodes,
        inputs,
        [vi(t, b.types[t], b.shapes[t]) for t in outputs],
        b.initializers,
        value_info=value_info,
    )
    return Case(model, feeds, dict(b.types), plain)


@st.composite
def cases(draw, plain: bool | None = None) -> Case:
    case = draw(graphs(plain))
    names = [n.name for n in case.model.graph.node]
    ops = sorted({n.op_type for n in case.model.graph.node})
    io = [v.name for v in (*case.model.graph.input, *case.model.graph.output)]
    options: dict = {}
    node_block = draw(st.none() | st.lists(st.sampled_from(names), unique=True), label="node_block_list")
    if node_block is not None:
        if draw(st.booleans(), label="add a regex"):
            node_block.append(f"n{draw(st.integers(1, 3))}[0-9]")  # n10-n19, n20-n29 or n30-n39
        options["node_block_list"] = node_block
    op_block = draw(st.none() | st.lists(st.sampled_from(ops), unique=True, max_size=3), label="op_block_list")
    if op_block is not None:
        options["op_block_list"] = op_block
    keep = draw(st.booleans() | st.lists(st.sampled_from(sorted(set(io))), unique=True), label="keep_io_types")
    if keep is not False:
        options["keep_io_types"] = keep
    case.options = options
    return case


def convert(case: Case, model: onnx.ModelProto | str | None = None) -> fp16.ConversionResult:
    return fp16.convert_float16(case.model if model is None else model, **case.options)


def cast_lower_bound(case: Case, fp32_nodes: set[str]) -> int:
    """The fewest Casts any conversion with these float32 nodes needs, from the original graph alone.

    Extends test_cast_count.lower_bound to integer tensors and existing Casts. Each float tensor has one
    precision, fixed by its producer (graph input: keep_io_types; computed: its node's precision); a "free"
    producer (initializer, existing Cast to FLOAT) can be stored in either, so it needs one Cast per extra
    precision its consumers want. Consumers: a float32 node wants float32 (a blocked node runs as in the
    float32 model, Shape included); a float16 node wants float16, except Shape, which reads either; a Cast reads
    either; a graph output wants what keep_io_types says (a pass-through input follows its input: same name).
    """
    graph = case.model.graph
    free = {t.name for t in graph.initializer}
    producer = {v.name: "fp32" if case.keeps(v.name) else "fp16" for v in graph.input}
    for node in graph.node:
        for out in node.output:
            if node.op_type == "Cast":
                free.add(out)
            else:
                producer[out] = "fp32" if node.name in fp32_nodes else "fp16"
    needs: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            if case.types[name] != F32 or node.op_type == "Cast":
                continue
            if node.name in fp32_nodes:
                needs.setdefault(name, set()).add("fp32")
            elif node.op_type != "Shape":
                needs.setdefault(name, set()).add("fp16")
    for out in graph.output:
        if case.types[out.name] == F32:
            needs.setdefault(out.name, set()).add("fp32" if case.keeps(out.name) else "fp16")
    return sum(max(0, len(want) - 1) if name in free else len(want - {producer[name]}) for name, want in needs.items())


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        types[value.name] = value.type.tensor_type.elem_type
    return types


# --- 1 + 2: valid, loads, runs, IO as asked, matches float32 ----------------------------------------------------
@PROPERTY
@given(cases())
def test_valid_runs_and_matches_float32(case):
    model = case.model
    onnx.checker.check_model(model, full_check=True)  # the generator makes valid models
    assert model.ir_version == IR_VERSION
    out = convert(case).model
    # Full checker, IR version, opsets, topological order, loads and runs on CPU, output names, values.
    check_converted(model, out, atol=TOLERANCE, rtol=TOLERANCE, feeds=case.feeds)
    assert out.ir_version == IR_VERSION
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]
    for before, after in zip(
        (*model.graph.input, *model.graph.output), (*out.graph.input, *out.graph.output), strict=True
    ):
        old, new = before.type.tensor_type, after.type.tensor_type
        assert new.shape == old.shape, before.name
        if old.elem_type != F32:
            assert new.elem_type == old.elem_type, f"non-float IO '{before.name}' changed type"
        else:
            assert new.elem_type == (F32 if case.keeps(before.name) else F16), f"keep_io_types on '{before.name}'"


# --- 3: the plan as decided, with the fewest Casts -------------------------------------------------------------
def check_plan_and_casts(case: Case, result) -> None:
    model, out = case.model, result.model
    report = result.report
    expected = case.expected_fp32()
    assert {d.node: d.rule.value for d in report.fp32_nodes} == expected
    assert {d.node for d in report.decisions} == set(case.classified())

    # Every decided node computes in the precision it was given.
    types = elem_types(out)
    precision = {d.node: F32 if d.node in expected else F16 for d in report.decisions}
    for node in out.graph.node:
        if node.name in precision and node.op_type != "Shape":
            wrong = [t for t in (*node.input, *node.output) if types[t] in FLOATS and types[t] != precision[node.name]]
            assert not wrong, f"{node.name} ({node.op_type}) should be all {precision[node.name]}: {wrong}"

    original_names = {n.name for n in model.graph.node}
    inserted = [n for n in out.graph.node if n.op_type == "Cast" and n.name not in original_names]
    assert len(inserted) == report.casts_inserted
    assert count_ops(out, "Cast") == count_ops(model, "Cast") + report.casts_inserted
    assert report.casts_inserted == cast_lower_bound(case, set(expected))
    if case.plain and isinstance(case.options.get("keep_io_types", False), bool):
        assert report.casts_inserted == lower_bound(model, set(expected), case.keeps(""))

    # No Cast pair that cancels out; one Cast per (tensor, target type); each crosses float16 <-> float32.
    inserted_outputs = {n.output[0] for n in inserted}
    assert not [n.name for n in inserted if n.input[0] in inserted_outputs], "an inserted Cast reads another"
    targets = Counter((n.input[0], helper.get_node_attr_value(n, "to")) for n in inserted)
    assert not [key for key, k in targets.items() if k > 1], f"several Casts of one tensor to one type: {targets}"
    for node in inserted:
        to = helper.get_node_attr_value(node, "to")
        assert {types[node.input[0]], to} == {F32, F16}, f"{node.name}: {types[node.input[0]]} -> {to}"


@PROPERTY
@given(cases())
def test_plan_applied_with_fewest_casts(case):
    check_plan_and_casts(case, convert(case))


@PROPERTY
@given(cases(plain=True))
def test_plain_graphs_cast_count_equals_lower_bound(case):
    """Elementwise/MatMul/Gemm/Conv graphs: also the simple bound of test_cast_count (bool keep_io_types)."""
    check_plan_and_casts(case, convert(case))


# --- 4: the input is not modified ------------------------------------------------------------------------------
@PROPERTY
@given(cases())
def test_input_model_not_modified(case):
    before = case.model.SerializeToString()
    convert(case)
    assert case.model.SerializeToString() == before


# --- 5: idempotence ---------------------------------------------------------------------------------------------
@PROPERTY
@given(cases())
def test_converting_twice_changes_nothing(case):
    once = convert(case).model
    again = convert(case, once)
    assert again.report.casts_inserted == 0
    assert again.model.SerializeToString() == once.SerializeToString()


# --- 6: determinism ---------------------------------------------------------------------------------------------
@PROPERTY
@given(cases())
def test_deterministic(case):
    first = convert(case).model.SerializeToString()
    copy = onnx.ModelProto.FromString(case.model.SerializeToString())
    assert convert(case, copy).model.SerializeToString() == first
    assert convert(case).model.SerializeToString() == first


# --- 7: both backends -------------------------------------------------------------------------------------------
@settings(PROPERTY, max_examples=EXAMPLES // 2)
@given(case=cases())
def test_path_and_proto_inputs_agree(case, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    onnx.save(case.model, path)
    via_proto = convert(case).model
    via_ir = convert(case, str(path)).model
    assert canonical(via_ir) == canonical(via_proto)
    for a, b in zip(run(via_proto, case.feeds), run(via_ir, case.feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def _collect(n: int) -> list[Case]:
    found: list[Case] = []

    @settings(PROPERTY, max_examples=n)
    @given(cases())
    def collect(case):
        found.append(case)

    collect()
    return found


_CONVERT_ALL = """
import hashlib, json, sys
import onnx
import olive_fp16_pass as fp16
for line in open(sys.argv[1]):
    job = json.loads(line)
    out = fp16.convert_float16(onnx.load(job["path"]), **job["options"]).model
    print(hashlib.sha256(out.SerializeToString()).hexdigest())
"""


def test_deterministic_across_processes(tmp_path):
    """Same bytes in other interpreters with other hash seeds (set/dict-of-str order must not leak into the model)."""
    jobs = tmp_path / "jobs.jsonl"
    expected = []
    with jobs.open("w") as f:
        for i, case in enumerate(_collect(EXAMPLES // 2)):
            path = tmp_path / f"m{i}.onnx"
            onnx.save(case.model, path)
            f.write(json.dumps({"path": str(path), "options": case.options}) + "\n")
            expected.append(hashlib.sha256(convert(case).model.SerializeToString()).hexdigest())
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", _CONVERT_ALL, str(jobs)],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.split() == expected, f"PYTHONHASHSEED={seed}"


def test_generator_covers_the_features():
    """The strategies reach what the properties are about (guards against a generator that silently narrows)."""
    seen: Counter = Counter()
    for case in _collect(EXAMPLES):
        graph = case.model.graph
        seen.update({n.op_type for n in graph.node})
        seen["Cast to FLOAT16"] += any(n.op_type == "Cast" and n.attribute[0].i == F16 for n in graph.node)
        seen["fan-out"] += any(k > 1 for k in Counter(i for n in graph.node for i in n.input).values())
        seen["int output"] += any(o.type.tensor_type.elem_type == I64 for o in graph.output)
        seen["pass-through"] += any(o.name == "x0" for o in graph.output)
        seen["regex"] += any("[" in e for e in case.options.get("node_block_list", []))
        seen["op block"] += bool(case.options.get("op_block_list"))
        seen["keep list"] += isinstance(case.options.get("keep_io_types"), list)
        seen["value_info"] += bool(graph.value_info)
        seen["fp32 nodes"] += bool(case.expected_fp32())
    features = [*UNARY, *BINARY, "MatMul", "Gemm", "Conv", "Cast", "Cast to FLOAT16", "Shape", "Gather"]
    features += ["fan-out", "int output", "pass-through", "regex", "op block", "keep list", "value_info", "fp32 nodes"]
    for feature in features:
        assert seen[feature] >= 3, f"{feature} generated in only {seen[feature]} of {EXAMPLES} examples"
