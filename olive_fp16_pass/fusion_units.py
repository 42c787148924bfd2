"""Groups of nodes that ONNX Runtime fuses into one kernel and that must therefore share a precision.

A LayerNorm or GELU written out as primitive ops is fused by ORT's graph optimizer (LayerNormFusion,
SimplifiedLayerNormFusion, GeluFusion, FastGeluFusion, BiasGeluFusion, SkipLayerNormFusion). If a conversion
puts part of such a pattern in float32 and the rest in float16, the fusion either fails or drops the Casts in
between. Moving the whole unit together avoids both and matches what the GPU really runs.

One more trap sits at a unit's border: ORT's LayerNormFusion also swallows a Cast that feeds the pattern's
first ReduceMean and Sub (it was written for Apex O2 models, fp16 data normalised in fp32) and builds
`LayerNormalization(x, scale, bias)` from the Cast's INPUT. With the default opset at 17 or later that node
resolves to ONNX's LayerNormalization-17, whose x and scale share one type, and the session fails: "Type
parameter (T) of Optype (LayerNormalization) bound to different types". So a LayerNorm unit must also run in
the precision of the tensor it normalises (`entry_sensitive`); the Float16 conversion enforces it
(`keep_units_whole`), and the written model is load-checked with every optimization anyway (float16.py).

The matcher works on any graph through a small adapter, so the mixed-precision search (protobuf, labels by
position) and the Float16 conversion (onnx-ir) share one definition of the patterns.

ORT's other fusions at ORT_ENABLE_ALL (QuickGelu/SiLU, BiasSoftmax, SkipLayerNorm and EmbedLayerNorm around a
LayerNormalization op, MatMulScale, MatMulTranspose, MatMulAdd, GemmActivation, ConvActivation,
ConvAddActivation, ConvBN, ConvMul/ConvAdd, Pad, BiasGelu around Gelu-20) match only along direct producer ->
consumer edges and absorb no Cast, so a precision boundary inside one of them just prevents the fusion: no unit
is needed (tests/test_fusion_straddle.py splits each member by member, and BERT/GPT-2 exports op type by op
type). SimplifiedLayerNorm's Cast-absorbing variant exists only with allow_precision_change, which sessions do
not enable. Attention and the CUDA-only fusions (GroupQueryAttention, BiasSoftmax's matcher) are left to the
load check, whose CUDA session runs where a GPU is present.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir
from onnx import numpy_helper

from olive_fp16_pass.precision_plan import NodeDecision, Precision, Rule

_ARITH = frozenset({"Mul", "Add", "Pow", "Div", "Sub"})


@dataclass
class FusionUnit:
    """One fused pattern: its kind, its nodes (first node first) and the tensor it reads (the entry)."""

    kind: str
    nodes: list = field(default_factory=list)
    entry: Hashable | None = None  # key of the input tensor the pattern normalises / activates
    # LayerNorm only: the normalisation itself (ReduceMean .. Div, without gamma/beta and the residual Add), and
    # the epsilon ORT's LayerNormFusion reads (a scalar constant at input 1 of the Add after the variance).
    core: list = field(default_factory=list)
    affine: list = field(default_factory=list)  # LayerNorm only: gamma's Mul and beta's Add
    epsilon: float | None = None

    @property
    def entry_sensitive(self) -> bool:
        """True where ORT absorbs a Cast at the entry into the fused node (see the module docstring)."""
        return self.kind == "LayerNorm"


class _View:
    """Producer/consumer lookups over one graph: `ins(node)`/`outs(node)` give hashable tensor keys."""

    def __init__(self, nodes: list, op: Callable, ins: Callable, outs: Callable, constant: Callable) -> None:
        """`constant(key)` is the tensor behind a constant input as a numpy array, or None."""
        self.nodes, self.op, self.ins, self.outs, self._constant = nodes, op, ins, outs, constant
        self.producer: dict = {}
        self.consumers: dict[Hashable, list] = {}
        for node in nodes:
            for key in outs(node):
                if key is not None:
                    self.producer[key] = node
            for key in ins(node):
                if key is not None:
                    self.consumers.setdefault(key, []).append(node)

    def is_constant(self, key: Hashable | None) -> bool:
        return key is not None and self._constant(key) is not None

    def scalar(self, key: Hashable | None) -> float | None:
        """The value of a one-element constant tensor, else None."""
        array = self._constant(key) if key is not None else None
        if array is None or array.size != 1 or array.dtype.kind != "f":
            return None
        return float(array.reshape(-1)[0])

    def users(self, node, *ops: str) -> list:
        outs = self.outs(node)
        if not outs or outs[0] is None:
            return []
        return [n for n in self.consumers.get(outs[0], []) if self.op(n) in ops]

    def out(self, node) -> Hashable | None:
        outs = self.outs(node)
        return outs[0] if outs else None

    def other_input(self, node, key: Hashable) -> Hashable | None:
        rest = [k for k in self.ins(node) if k != key]
        return rest[0] if rest else None


def _normalize(view: _View, unit: FusionUnit, var, numerator):
    """var -> Add(eps) -> Sqrt -> Div(numerator, .) or Reciprocal -> Mul(numerator, .): the common tail of
    LayerNorm and RMSNorm. Appends what it finds to `unit`; returns the node that writes the normalised tensor."""
    norm = None
    for eps in view.users(var, "Add"):
        unit.nodes.append(eps)
        ins = view.ins(eps)
        if len(ins) == 2 and ins[0] == view.out(var):
            unit.epsilon = view.scalar(ins[1])
        for root in view.users(eps, "Sqrt"):
            unit.nodes.append(root)
            for div in view.users(root, "Div"):
                if numerator in view.ins(div):
                    unit.nodes.append(div)
                    norm = div
            for rec in view.users(root, "Reciprocal"):
                unit.nodes.append(rec)
                for mul in view.users(rec, "Mul"):
                    if numerator in view.ins(mul):
                        unit.nodes.append(mul)
                        norm = mul
    return norm


def _layernorm(view: _View, mean) -> FusionUnit | None:
    """mean -> Sub -> Pow/Mul -> ReduceMean -> Add -> Sqrt -> Div (or Reciprocal + Mul) [-> Mul -> Add]."""
    x = view.ins(mean)[0] if view.ins(mean) else None
    subs = [s for s in view.users(mean, "Sub") if x in view.ins(s)]
    unit = FusionUnit("LayerNorm", [mean], x)
    norm = None
    for sub in subs:
        unit.nodes.append(sub)
        d = view.out(sub)
        for sq in view.users(sub, "Pow", "Mul"):
            if view.op(sq) == "Mul" and view.ins(sq).count(d) != 2:
                continue
            for var in view.users(sq, "ReduceMean"):
                unit.nodes += [sq, var]
                norm = _normalize(view, unit, var, d) or norm
    if norm is None:
        return None
    unit.core = list(unit.nodes)
    for scale in view.users(norm, "Mul"):  # the affine part (gamma, beta) is fused too
        unit.nodes.append(scale)
        unit.nodes.extend(view.users(scale, "Add"))
    unit.affine = unit.nodes[len(unit.core) :]
    _add_residual(view, unit, x)
    return unit


def _rmsnorm(view: _View, pow_node) -> FusionUnit | None:
    """x -> Pow(2) -> ReduceMean -> Add -> Sqrt -> Div(x, .) (or Reciprocal + Mul) [-> Mul]: SimplifiedLayerNorm."""
    ins = view.ins(pow_node)
    x = ins[0] if ins else None
    if view.op(pow_node) == "Mul" and ins.count(x) != 2:
        return None
    unit = FusionUnit("SimplifiedLayerNorm", [pow_node], x)
    norm = None
    for var in view.users(pow_node, "ReduceMean"):
        unit.nodes.append(var)
        norm = _normalize(view, unit, var, x) or norm
    if norm is None:
        return None
    unit.nodes.extend(view.users(norm, "Mul"))
    return unit


def _add_residual(view: _View, unit: FusionUnit, x) -> None:
    """SkipLayerNormFusion takes the residual Add that produces the normalised tensor."""
    producer = view.producer.get(x)
    if producer is not None and view.op(producer) == "Add" and not any(view.is_constant(k) for k in view.ins(producer)):
        unit.nodes.insert(0, producer)


def _near(value: float | None, *targets: float) -> bool:
    return value is not None and any(abs(value - t) <= 1e-3 * abs(t) for t in targets)


def _gelu(view: _View, erf) -> FusionUnit | None:
    """x * 0.5 * (1 + erf(x / sqrt 2)) in the orders exporters write it (ORT's GeluFusion checks the constants)."""
    before = view.producer.get(view.ins(erf)[0]) if view.ins(erf) else None
    if before is None or view.op(before) not in ("Div", "Mul"):
        return None
    target = 1.4142135 if view.op(before) == "Div" else 0.70710678
    x = next((k for k in view.ins(before) if not _near(view.scalar(k), target)), None)
    if x is None or not any(_near(view.scalar(k), target) for k in view.ins(before)):
        return None
    unit = FusionUnit("Gelu", [before, erf], x)
    adds = [a for a in view.users(erf, "Add") if any(_near(view.scalar(k), 1.0) for k in view.ins(a))]
    if len(adds) != 1:
        return None
    unit.nodes.append(adds[0])
    _gelu_tail(view, unit, adds[0], x, (("Mul",), ("Mul",)))  # by x (or by 0.5 x), by 0.5
    return unit if len(unit.nodes) >= 4 else None


def _gelu_tail(view: _View, unit: FusionUnit, node, x, steps) -> None:
    """Follow the single consumers `steps` after `node` (the `+ 1` and the multiplications by x and 0.5)."""
    for ops in steps:
        nxt = view.users(node, *ops)
        if len(nxt) != 1:
            break
        node = nxt[0]
        unit.nodes.append(node)
        for key in view.ins(node):
            half = view.producer.get(key)
            if half is not None and half not in unit.nodes and view.op(half) == "Mul" and x in view.ins(half):
                unit.nodes.insert(0, half)  # 0.5 * x computed first


def _fast_gelu(view: _View, tanh) -> FusionUnit | None:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), recognised by its constants as FastGeluFusion does."""
    scale = view.producer.get(view.ins(tanh)[0]) if view.ins(tanh) else None
    if scale is None or view.op(scale) != "Mul":
        return None
    if not any(_near(view.scalar(k), 0.7978846, 1.5957691) for k in view.ins(scale)):
        return None
    inner = next((k for k in view.ins(scale) if view.scalar(k) is None), None)
    add = view.producer.get(inner)
    if add is None or view.op(add) != "Add":
        return None
    for x, cubic in (view.ins(add), reversed(view.ins(add))):
        chain, node, found = [], view.producer.get(cubic), False
        for _ in range(4):  # 0.044715 * x^3: Mul/Pow steps back to x
            if node is None or view.op(node) not in ("Mul", "Pow"):
                break
            chain.append(node)
            found = found or any(_near(view.scalar(k), 0.044715) for k in view.ins(node))
            rest = [k for k in view.ins(node) if view.scalar(k) is None and k != x]
            if not rest:
                break
            node = view.producer.get(rest[0])
        else:
            continue
        if not found or x not in {k for n in chain for k in view.ins(n)}:
            continue
        unit = FusionUnit("FastGelu", [*reversed(chain), add, scale, tanh], x)
        _gelu_tail(view, unit, tanh, x, (("Add",), ("Mul",), ("Mul",)))
        return unit
    return None


def _bias(view: _View, unit: FusionUnit, claimed: set[int]) -> None:
    """BiasGeluFusion also takes the Add of a constant bias that produces the activation's input.

    Not when that Add already ends another unit (a LayerNorm's beta): ORT fuses the LayerNorm first."""
    producer = view.producer.get(unit.entry)
    if (
        producer is not None
        and id(producer) not in claimed
        and view.op(producer) == "Add"
        and any(view.scalar(k) is not None or view.is_constant(k) for k in view.ins(producer))
    ):
        unit.nodes.insert(0, producer)


def find_units(view: _View) -> list[FusionUnit]:
    units: list[FusionUnit] = []
    claimed: set[int] = set()
    for node in view.nodes:
        op = view.op(node)
        unit = None
        if op == "ReduceMean":
            unit = _layernorm(view, node)
        elif op in ("Pow", "Mul") and id(node) not in claimed:
            unit = _rmsnorm(view, node) if view.users(node, "ReduceMean") else None
        elif op in ("Erf", "Tanh"):
            unit = _gelu(view, node) if op == "Erf" else _fast_gelu(view, node)
            if unit is not None:
                _bias(view, unit, claimed)
        if unit is None or len(unit.nodes) < 3:
            continue
        unique = list({id(n): n for n in unit.nodes}.values())
        if any(id(n) in claimed for n in unique):
            continue  # e.g. the Pow of a LayerNorm seen again as an RMSNorm start
        claimed.update(id(n) for n in unique)
        unit.nodes = unique
        units.append(unit)
    return units


def fusion_units(graph: onnx.GraphProto, labels: list[str]) -> list[set[str]]:
    """Sets of node labels (`labels[i]` names `graph.node[i]`) forming the patterns ORT fuses."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            tensors[node.output[0]] = next((a.t for a in node.attribute if a.name == "value"), None)
    cache: dict[str, object] = {}

    def constant(name: str):
        if name not in cache:
            tensor = tensors.get(name)
            cache[name] = numpy_helper.to_array(tensor) if tensor is not None and tensor.data_location == 0 else None
        return cache[name]

    view = _View(list(graph.node), lambda n: n.op_type, lambda n: list(n.input), lambda n: list(n.output), constant)
    position = {id(n): i for i, n in enumerate(graph.node)}
    return [{labels[position[id(n)]] for n in unit.nodes} for unit in find_units(view)]


def ir_units(graph: ir.Graph) -> list[FusionUnit]:
    """The fusion units of one onnx-ir graph; tensor keys are the `ir.Value`s themselves."""

    def constant(value: ir.Value):
        tensor = value.const_value
        producer = value.producer()
        if tensor is None and producer is not None and producer.op_type == "Constant":
            attr = producer.attributes.get("value")
            tensor = attr.value if attr is not None else None
        if tensor is None or (tensor.size > 16 and not isinstance(tensor, ir.Tensor)):
            return None if tensor is None else _Large()
        return tensor.numpy()

    view = _View(list(graph), lambda n: n.op_type, lambda n: list(n.inputs), lambda n: list(n.outputs), constant)
    return find_units(view)


class _Large:
    """Stands for a constant too large to read just to know it is constant (external data stays on disk)."""

    size = -1
    dtype = None


def _set_fp32(classified, node: ir.Node, rule: Rule, detail: str, origin: str | None = None) -> None:
    decision = classified.plan.decisions[id(node)]
    classified.plan.decisions[id(node)] = NodeDecision(
        decision.node, decision.op_type, decision.domain, decision.graph, Precision.FP32, rule, detail, origin
    )
    classified.node_slots.pop(id(node), None)
    classified.output_slots.pop(id(node), None)


def entry_precision(value: ir.Value | None, model: ir.Model, classified, options) -> Precision | None:
    """The precision the converter will give `value`, where it is decided by a rule or by keep_io_types."""
    if value is None:
        return None
    producer = value.producer()
    if producer is None:
        if value in model.graph.inputs:
            return Precision.FP32 if options.keeps_io(value.name or "") else Precision.FP16
        return Precision.FP32 if value.graph is not None and value in value.graph.inputs else None
    decision = classified.plan.decisions.get(id(producer))
    if decision is None:
        return None  # Cast / Constant: follows its consumers, so no boundary at the unit
    if decision.precision is Precision.FP32:
        return Precision.FP32
    return Precision.FP16 if value.index() in classified.output_slots.get(id(producer), ()) else Precision.FP32


def _unmovable_fp16_entry(unit: FusionUnit, model: ir.Model, classified, options) -> bool:
    if entry_precision(unit.entry, model, classified, options) is not Precision.FP16:
        return False
    producer = unit.entry.producer()
    return producer is None or id(producer) not in classified.plan.decisions


def keep_units_whole(model: ir.Model, units: list[FusionUnit], classified, options, labels) -> list[str]:
    """Move every fusion unit to one precision, and LayerNorm units to their entry's precision (opset >= 17).

    Only ever moves nodes to float32, so a user's block lists and every range rule still hold. Returns notes
    for the report. A partly float32 LayerNorm that reads a float16 graph input is left as the rules made
    it: in float32 as a whole it could not load (the boundary Cast would be absorbed) and nothing upstream
    can move; split, ORT does not fuse it.
    """
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    notes: list[str] = []
    decisions = classified.plan.decisions
    changed = True
    while changed:  # a unit moved to float32 can make the next unit's entry float32: repeat to a fixpoint
        changed = False
        for unit in units:
            members = [n for n in unit.nodes if id(n) in decisions]
            fp32 = [n for n in members if decisions[id(n)].precision is Precision.FP32]
            pinned = unit.entry_sensitive and opset >= 17 and _unmovable_fp16_entry(unit, model, classified, options)
            if fp32 and len(fp32) < len(members) and not pinned:
                cause = decisions[id(fp32[0])]
                for node in members:
                    if decisions[id(node)].precision is Precision.FP16:
                        detail = f"fused with '{cause.node}' (onnxruntime fuses this {unit.kind} into one kernel)"
                        _set_fp32(classified, node, cause.rule, f"{detail}: {cause.detail}".rstrip(": "), cause.origin)
                notes.append(f"{unit.kind} unit at '{labels[id(members[0])]}' kept whole in float32")
                changed = True
                continue
            if not unit.entry_sensitive or opset < 17 or not members:
                continue
            here = Precision.FP32 if fp32 else Precision.FP16
            entry = entry_precision(unit.entry, model, classified, options)
            if entry is None or entry is here:
                continue
            first = labels[id(members[0])]
            if here is Precision.FP16:  # float32 entry: the unit follows it, the Cast moves after the unit
                detail = (
                    f"reads float32 '{unit.entry.name}': onnxruntime's LayerNormFusion would absorb the Cast to "
                    "float16 and fail to load; the unit runs in its input's precision"
                )
                for node in members:
                    _set_fp32(classified, node, Rule.FUSION_BOUNDARY, detail)
                notes.append(f"LayerNorm unit at '{first}' kept in float32, the precision of its input")
                changed = True
                continue
            producer = unit.entry.producer()
            if producer is None or id(producer) not in decisions:
                continue  # a float16 graph input: nothing to move; the load check decides (and explains)
            detail = (
                f"feeds the float32 LayerNorm at '{first}': a Cast between them would be absorbed by onnxruntime's "
                "LayerNormFusion (the model would not load), so the precision boundary moves before this node"
            )
            _set_fp32(classified, producer, Rule.FUSION_BOUNDARY, detail)
            notes.append(f"'{labels[id(producer)]}' kept in float32 so that the LayerNorm at '{first}' reads float32")
            changed = True
    return notes + [note for unit in units if (note := _keep_epsilon_float32(unit, classified, labels))]


# ORT's LayerNormFusion writes this epsilon when the Add's constant is not float32 (onnxruntime 1.20 to 1.26).
ORT_DEFAULT_EPSILON = 1e-5


def epsilon_core(unit: FusionUnit, decisions) -> str | None:
    """Why a float16 LayerNorm unit's normalisation (`unit.core`) must run in float32, or None: its epsilon is
    not ORT's default. `decisions`: node id -> NodeDecision (the conversion's plan, or the search's candidate).

    onnxruntime up to 1.26 (1.30 reads float16 too) takes LayerNormalization's epsilon from the Add's constant
    only where it is float32, else writes 1e-5: a float16 LayerNorm with eps = 1e-6 (ViT, DeiT, ConvNeXt) was
    fused with ten times its epsilon, and on rows of small variance the output moved by O(1). With ReduceMean..Div
    in float32 between a Cast from the float16 input and a Cast before gamma's Mul, ORT still fuses the unit (the
    Apex O2 pattern: both Casts absorbed, LayerNormalization reads the float16 input, gamma and beta) and reads the
    float32 epsilon: the fused kernel is the same, only the unfused graph computes the statistics in float32.
    Skipped where another float32 node reads the input (the Cast would then have a third consumer and not be
    absorbed: LayerNormalization would read float32 x with float16 gamma and fail to load).
    """
    members = [n for n in unit.nodes if id(n) in decisions]
    if unit.kind != "LayerNorm" or unit.epsilon is None or not unit.core or len(members) != len(unit.nodes):
        return None
    if abs(unit.epsilon - ORT_DEFAULT_EPSILON) <= 1e-2 * ORT_DEFAULT_EPSILON:
        return None  # where ORT falls back, it falls back to this very value
    if any(decisions[id(n)].precision is Precision.FP32 for n in members):
        return None
    if {n.op_type for n in unit.affine} != {"Mul", "Add"}:
        return None  # without gamma and beta ORT does not fuse it: its epsilon is the model's
    if _other_float32_reader(unit, decisions):
        return None
    return (
        f"epsilon {unit.epsilon:.3g}: onnxruntime <= 1.26 fuses a float16 LayerNorm with epsilon 1e-5 (it reads "
        "only a float32 one), so the normalisation stays float32 between two Casts that the fusion absorbs"
    )


def _keep_epsilon_float32(unit: FusionUnit, classified, labels) -> str | None:
    """The conversion's side of `epsilon_core`: the core set to float32 in the plan, and a note."""
    detail = epsilon_core(unit, classified.plan.decisions)
    if detail is None:
        return None
    for node in unit.core:
        _set_fp32(classified, node, Rule.FUSION_BOUNDARY, detail)
    first = labels[id(unit.core[0])]
    return f"LayerNorm unit at '{first}' normalises in float32 to keep its epsilon {unit.epsilon:.3g}"


def _other_float32_reader(unit: FusionUnit, decisions) -> bool:
    """True where a float32 node outside the normalisation reads the unit's input (it would share the Cast)."""
    core = {id(n) for n in unit.core}
    readers = [node for node, _ in unit.entry.uses()] if isinstance(unit.entry, ir.Value) else []
    return any(
        id(n) not in core and id(n) in decisions and decisions[id(n)].precision is Precision.FP32 for n in readers
    )
