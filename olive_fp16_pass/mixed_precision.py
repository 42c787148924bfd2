"""`auto_mixed_precision`: keep in float32 only the nodes that accuracy on real data requires.

Compared with onnxconverter-common's `auto_convert_mixed_precision`, which bisects blindly over the node list
(about 2k·log2(N/k) conversions and sessions for k sensitive nodes) and validates on the CPU execution
provider (which hides float16 overflow), this search:
1. runs the float32 model once with every tensor exposed: per-tensor ranges, and the reference outputs;
2. validates full float16 first (the static rules only, masking sentinels converted: sentinels.py, and the
   weight-underflow rule overruled); a model that is fine in float16 stops here, after one validation;
3. otherwise keeps in float32, with their measured value as the reason, nodes that read or write a tensor
   beyond float16's range (with a safety margin; masking sentinels excepted) or one that is entirely
   subnormal in float16, and validates that candidate once;
4. otherwise runs the float16 candidate once (emulated) with every tensor exposed and ranks the remaining
   nodes by the error each one adds (its output error minus its inputs' error);
5. finds the shortest prefix of that ranking that passes (exponential then binary search, whole fusion
   units at a time), then tries to give back to float16 the prefix nodes that were not needed, the most
   expensive first (node_cost.py: FLOPs, bytes and the Casts each return saves or adds);
6. checks the result on held-out data that the search never saw.
Whatever the stages pick, the result never keeps more nodes in float32 than a candidate already seen to
pass (and load).
Candidates are validated on the target execution provider when it really works here, else with float16
storage emulated on the CPU; never with the CPU provider running a float16 graph. A candidate that fails to
load or run counts as a failed candidate; the search goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass import ir_serde
from olive_fp16_pass.activation_stats import ActivationStats, range_decisions
from olive_fp16_pass.compare import Criteria, OutputError, compare_outputs
from olive_fp16_pass.errors import Float16Error, first_line
from olive_fp16_pass.float16 import ConversionResult, ModelLike, convert_with_options, mark_sentinels
from olive_fp16_pass.fusion_units import fusion_units
from olive_fp16_pass.graph_edit import expose_outputs as _expose  # shared with localize.py
from olive_fp16_pass.model_io import has_external_data, load, load_model_file, set_base_dir
from olive_fp16_pass.node_cost import NodeCost, fp16_share, give_back_order, links_of, node_costs
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import OVERRULABLE, ForcedDecision, Origin, Precision, Rule
from olive_fp16_pass.progress import progress_bar
from olive_fp16_pass.report import SearchReport
from olive_fp16_pass.runtime import (
    BIG_MODEL_BYTES,
    SessionFactory,
    ValidationBackend,
    choose_backend,
    run_session,
    tensor_view,
)
from olive_fp16_pass.sentinels import SentinelLookup, sentinel_notes
from olive_fp16_pass.switchable import SwitchableEmulation, release_external
from olive_fp16_pass.weight_ranges import FP16_MAX

logger = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]


RANKING_SAMPLES = 4
# Under float16-storage emulation a candidate must pass within this fraction of each tolerance. Emulation rounds
# every float16 tensor where it is produced; GPU kernels round in other places too (fused attention, reduced
# precision accumulation), so a candidate at the very edge under emulation may fail there. 0.8 keeps 20% room;
# a choice, not yet measured against a GPU (bench/gpu_check.sh is where to measure it).
EMULATION_MARGIN = 0.8  # feeds used to rank nodes by the error they add


def _as_float32(value) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


# Below this many estimated FLOPs per run (node_cost.py) the gated session runs on one thread (see threads()).
SMALL_MODEL_FLOPS = 5e7

# A node whose inputs are this many times larger than its output cancels them (x + c - c): its accuracy
# depends on the precision its inputs are stored in.
CANCELLATION_RATIO = 8.0


class CriteriaNotMetError(Float16Error):
    """No candidate meets the accuracy criteria, not even with every node in float32."""


@dataclass
class Candidate:
    forced: dict[str, ForcedDecision]
    passed: bool
    failures: list[str]
    errors: dict[str, OutputError] | None
    nodes_fp32: int | None = None  # nodes (subgraphs included) the candidate runs in float32, static rules included
    flops_fp32: float | None = None  # their estimated FLOPs (main graph, node_cost.py)
    loads: bool | None = None  # the real model loads with ORT's optimizations on (None: not checked yet)

    def order(self) -> tuple[float, float]:
        """Fewer float32 nodes first, then fewer float32 FLOPs."""
        return (self.nodes_fp32 if self.nodes_fp32 is not None else math.inf, self.flops_fp32 or 0.0)


def _analyze(proto: onnx.ModelProto) -> tuple[list[str], list[str], dict[str, ir.Value], dict[str, list[str]]]:
    """Labels of main-graph nodes in order, exactly as the converter names them (subgraph nodes counted), the
    float32 outputs of main-graph nodes (from the converter's own type propagation), and those outputs as
    onnx-ir values (their uses tell a masking sentinel from an overflow, sentinels.py)."""
    from olive_fp16_pass import element_types
    from olive_fp16_pass.graph_walk import GraphIndex

    ir_model = ir_serde.deserialize_model(proto)
    index = GraphIndex(ir_model)
    types = element_types.infer(ir_model, index)
    labels = [index.labels[id(node)] for node in ir_model.graph]
    values = {v.name: v for node in ir_model.graph for v in node.outputs if v.name and types.is_float32(v)}
    return labels, list(values), values, _body_labels(index, labels)


def _body_labels(index, labels: list[str]) -> dict[str, list[str]]:
    """Main-graph control-flow node -> the labels of every node in its bodies (nested ones included)."""
    inside: dict[str, list[str]] = {}
    for node, path in index.nodes:
        if path != "main":
            owner = path.split("/", 2)[1]  # "main/<owner label>/<attribute>[/...]"
            inside.setdefault(owner, []).append(index.labels[id(node)])
    return {label: inside[label] for label in labels if label in inside}


def check_feeds(proto: onnx.ModelProto, feeds: list[Feed], what: str = "data") -> None:
    """Names, ranks and element kinds of every feed against the model's inputs, with one clear error."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in initializers}
    for k, feed in enumerate(feeds):
        if not isinstance(feed, Mapping):
            raise Float16Error(f"{what}[{k}]: expected a dict of input name -> array, got {type(feed).__name__}")
        missing = sorted(set(inputs) - set(feed))
        unknown = sorted(set(feed) - set(inputs))
        if missing or unknown:
            raise Float16Error(
                f"{what}[{k}]: input names do not match the model (missing: {missing or '-'}; "
                f"unknown: {unknown or '-'}; model inputs: {sorted(inputs)})"
            )
        for name, value in inputs.items():
            if value.type.WhichOneof("value") != "tensor_type":  # a map or sequence input: onnxruntime checks it
                continue
            array = np.asarray(feed[name])
            tensor_type = value.type.tensor_type
            dims = tensor_type.shape.dim
            if tensor_type.HasField("shape") and array.ndim != len(dims):
                raise Float16Error(
                    f"{what}[{k}]['{name}']: rank {array.ndim} (shape {array.shape}), the model expects rank "
                    f"{len(dims)}"
                )
            for axis, dim in enumerate(dims):
                if dim.HasField("dim_value") and array.shape[axis] != dim.dim_value:
                    raise Float16Error(
                        f"{what}[{k}]['{name}']: shape {array.shape}, the model expects {dim.dim_value} on axis {axis}"
                    )
            expected = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            if np.issubdtype(expected, np.floating) != np.issubdtype(array.dtype, np.floating):
                raise Float16Error(f"{what}[{k}]['{name}']: dtype {array.dtype}, the model expects {expected}")


def estimate_bytes(proto: onnx.ModelProto, base_dir: Path | None) -> int:
    """Bytes of the main graph's initializers, in the proto or in external files (declared lengths)."""
    total = 0
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            total += int(info.get("length", 0) or 0)
        else:
            total += len(tensor.raw_data)
    return total


class _Search:
    def __init__(
        self,
        proto,
        feeds,
        holdout,
        criteria,
        backend: ValidationBackend,
        base: ConversionOptions,
        overflow_margin: float,
        progress: bool,
        refine_budget: int,
        base_dir: Path | None = None,
        emulation_margin: float = 1.0,
    ) -> None:
        self.proto = proto
        self.base_dir = base_dir  # where external data files are (None: the model holds all its data)
        self.big = estimate_bytes(proto, base_dir) >= BIG_MODEL_BYTES
        self.feeds = feeds
        self.holdout = holdout
        self.user_criteria = criteria
        # Emulation approximates the GPU's kernels: accept there only within a fraction of each tolerance.
        self.criteria = criteria.tightened(emulation_margin) if backend.emulated else criteria
        self.backend = backend
        self.base = base
        self.overflow_margin = overflow_margin
        self.sessions = SessionFactory(backend, base_dir, self.big)
        self.output_names = [o.name for o in proto.graph.output]
        self.labels, self.float_names, self.values, self.bodies = _analyze(proto)
        # which tensors beyond the range limit hold masking sentinels; measured by the reference run
        self.sentinels = SentinelLookup(self.values, {})
        self.tried = 0
        self.history: list[dict] = []
        self.passing: list[Candidate] = []  # every candidate that met the criteria on the validation feeds
        self.refine_budget = refine_budget
        self.costs: dict[str, NodeCost] = {}  # estimated per node once the reference run gave the shapes
        self.links: dict[str, list[tuple[str, int]]] = {}
        self.bar = progress_bar("mixed precision search", "candidate", enabled=progress)  # plain lines without tqdm

    # -- building and validating candidates --------------------------------------------------------------
    def fresh_ir(self) -> ir.Model:
        """A new onnx-ir copy of the source whose external tensors read from the model's folder."""
        model = ir_serde.deserialize_model(self.proto)
        if self.base_dir is not None:
            set_base_dir(model, self.base_dir)
        return model

    def with_bodies(self, forced: Mapping[str, ForcedDecision]) -> dict[str, ForcedDecision]:
        """`forced` with the body nodes of every control-flow node it keeps in float32 kept there too.

        The search ranks and forces main-graph nodes; a Loop/Scan/If is float32 at its interface whatever it
        computes inside, so forcing only the node itself could never undo a body's float16 error (scikit-learn's
        GaussianProcessRegressor computes its distances in a Scan body: no candidate met the criteria)."""
        expanded = dict(forced)
        for label, record in forced.items():
            if record.precision is Precision.FP32 and label in self.bodies:
                for inner in self.bodies[label]:
                    expanded.setdefault(inner, ForcedDecision(record.rule, record.detail, record.origin, label))
        return expanded

    def build(self, forced, *, emulate: bool) -> ConversionResult:
        """The real (or emulated) candidate; the last real one is kept: the load check and the result share it."""
        forced = self.with_bodies(forced)
        key = (tuple(sorted(forced)), emulate)
        if getattr(self, "_built_key", None) == key:
            return self._built
        # check_runtime=False: the search's own sessions already prove onnxruntime loads this model.
        result = convert_with_options(self.fresh_ir(), self.base, forced=forced, emulate=emulate, check_runtime=False)
        release_external(result.ir_model)
        self._built_key, self._built = key, result
        return result

    def outputs(
        self, model: onnx.ModelProto | ir.Model, feeds, *, emulation: bool, names=None
    ) -> list[list[np.ndarray]]:
        session = self.sessions.session(model, emulation=emulation)
        return [
            [
                np.asarray(o, np.float32) if np.issubdtype(np.asarray(o).dtype, np.floating) else np.asarray(o)
                for o in run_session(session, feed, names)
            ]
            for feed in feeds
        ]

    def switch(self) -> None:
        """Build the one emulation model/session every candidate is validated with (emulated backend)."""
        self.switchable = SwitchableEmulation(
            self.proto, expose=self.float_names, base_dir=self.base_dir, round_at_use=self.big
        )
        self.switch_session = self.sessions.session(self.switchable.model, emulation=True, threads=self.threads())

    def threads(self) -> int | None:
        """One intra-op thread for the gated session of a small model: its runs last a fraction of a
        millisecond per node, and handing each node to a thread pool cost more than the work (enc300 of
        bench/amp_speed.py, 2 shared cores: 25-40% of the search time). Bigger models keep onnxruntime's
        default."""
        total = sum(cost.flops for cost in self.costs.values())
        return 1 if total < SMALL_MODEL_FLOPS else None

    def run_switch(self, forced, feeds, names: list[str], select: slice = slice(None)):
        """Runs of the gated session for the candidate `forced` on `feeds[select]`, and its classification.

        The gates of the last candidate stay bound: a validation that runs its first feed, then the others,
        computes and binds them once."""
        forced = self.with_bodies(forced)
        # I/O binding: session.run() validates every input name in Python, 38 ms a run with the thousands of
        # gate inputs of a 1,500-node encoder, twice the run itself (bench/amp_speed.py).
        if self.switch_session is None:
            self.switch_session = self.sessions.session(self.switchable.model, emulation=True, threads=self.threads())
        typed = self._typed_feeds(feeds)[select]
        if any(not isinstance(v, np.ndarray) or v.dtype.kind in "OSU" for feed in typed for v in feed.values()):
            # Strings (a scikit-learn pipeline's text or category column), maps: I/O binding refuses them.
            gates, classified = self.switchable.gates(self.base, forced)
            gate_feed = self.switchable.gate_feed(gates)
            runs = [[tensor_view(o) for o in self.switch_session.run(names, {**gate_feed, **feed})] for feed in typed]
            return runs, classified
        key = (frozenset(forced), id(self.switch_session))
        if getattr(self, "_bound_key", None) != key:
            gates, classified = self.switchable.gates(self.base, forced)
            binding = self.switch_session.io_binding()
            for name, value in self.switchable.gate_feed(gates).items():
                binding.bind_cpu_input(name, value)
            self._bound_key, self._bound = key, (binding, classified)
        binding, classified = self._bound
        runs = []
        for feed in typed:
            for name, value in feed.items():
                binding.bind_cpu_input(name, value)
            for name in names:
                binding.bind_output(name)
            self.switch_session.run_with_iobinding(binding)
            runs.append([tensor_view(o) for o in binding.copy_outputs_to_cpu()])
            binding.clear_binding_outputs()
        return runs, classified

    def _typed_feeds(self, feeds) -> list[dict[str, np.ndarray]]:
        """Feeds as arrays once per list, float32 where the input is float32 (the gated model's inputs are the
        float32 model's); other inputs keep their dtype (a float64 model takes float64)."""
        key = id(feeds)
        if getattr(self, "_typed_key", None) != key:
            inputs = self.proto.graph.input
            float32 = {i.name for i in inputs if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
            tensors = {i.name for i in inputs if i.type.WhichOneof("value") == "tensor_type"}
            self._typed = [
                {
                    k: np.asarray(v, np.float32) if k in float32 else np.asarray(v) if k in tensors else v
                    for k, v in feed.items()
                }
                for feed in feeds
            ]
            self._typed_key = key
        return self._typed

    def validate(
        self, forced, feeds, reference, stage: str, *, load_check: bool = True, early_exit: bool = True
    ) -> Candidate:
        """Accuracy on `feeds`; with the emulated backend a passing candidate must also load for real (ORT's
        fusions included) when `load_check` is set. `early_exit`: a failure on the first feed that more feeds
        cannot undo ends the validation there (off where the report shows the errors: held-out, fallback)."""
        self.tried += 1
        self.bar.update(1)
        start = time.perf_counter()
        nodes_fp32 = flops_fp32 = None
        try:
            if self.backend.emulated:

                def run(select: slice):
                    runs, classified = self.run_switch(forced, feeds, self.output_names, select)
                    return [[_as_float32(o) for o in run] for run in runs], classified.plan.decisions.values()
            else:
                built = self.build(forced, emulate=False)

                def run(select: slice):
                    return self.outputs(built.ir_model, feeds[select], emulation=False), built.report.decisions

            # The first feed alone first: a failure that more feeds cannot undo (NaN, allclose, max_abs) ends
            # the validation there; most candidates of a search fail, most of them on every feed.
            split = 1 if len(feeds) > 1 and early_exit else len(feeds)
            outputs, decisions = run(slice(0, split))
            errors = compare_outputs(self.output_names, reference[:split], outputs, self.criteria)
            failures = self.criteria.lasting_failures(errors) if split < len(feeds) else self.criteria.check(errors)
            if failures:
                failures = (
                    [f"{f} (first feed; the others not run)" for f in failures] if split < len(feeds) else failures
                )
            elif split < len(feeds):
                outputs += run(slice(split, None))[0]
                errors = compare_outputs(self.output_names, reference, outputs, self.criteria)
                failures = self.criteria.check(errors)
            fp32 = [d.node for d in decisions if d.precision is Precision.FP32]
            nodes_fp32 = len(fp32)
            flops_fp32 = sum(self.costs[label].flops for label in fp32 if label in self.costs)
            if not failures and self.backend.emulated and load_check:
                failures = self.load_check(forced, feeds[:1])
        except Float16Error:
            raise
        except Exception as exc:  # a candidate ORT cannot load or run: rejected, the search goes on
            errors, failures = None, [f"candidate failed to load or run: {type(exc).__name__}: {str(exc)[:300]}"]
        candidate = Candidate(dict(forced), not failures, failures, errors, nodes_fp32, flops_fp32)
        if candidate.passed and feeds is self.feeds:
            self.passing.append(candidate)
        self.history.append(
            {
                "stage": stage,
                "nodes_fp32_forced": sum(record.precision is Precision.FP32 for record in forced.values()),
                "nodes_fp32": nodes_fp32,
                "flops_fp32": flops_fp32,
                "passed": candidate.passed,
                "failures": failures[:5],
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        return candidate

    def load_check(self, forced, feeds) -> list[str]:
        """The real mixed model must load and run with ORT's optimizations on (fusions included)."""
        model = self.build(forced, emulate=False).ir_model
        try:
            if self.big:
                outputs = self._run_from_file(model, feeds[0])
            else:  # emulated backend: the CPU provider
                outputs = run_session(self.sessions.session(model, emulation=False), feeds[0])
        except Exception as exc:
            return [f"candidate failed to load or run: {type(exc).__name__}: {str(exc)[:300]}"]
        bad = [
            n
            for n, o in zip(self.output_names, outputs, strict=True)
            if np.issubdtype(np.asarray(o).dtype, np.floating)
            and not np.isfinite(np.asarray(o)).all()
            and np.isfinite(self.reference_first[n]).all()
        ]
        return [f"{n}: NaN/Inf in the real float16 model on ORT" for n in bad]

    def _run_from_file(self, model: ir.Model, feed) -> list[np.ndarray]:
        """A big candidate runs from a temporary file: onnxruntime memory-maps its data instead of copying
        weights handed over in memory (measured twice their size), and the gated session, whose mapped weights
        would add the model's size again, is closed meanwhile (reopened, cheaply, when needed)."""
        import tempfile

        from olive_fp16_pass.model_io import save_model

        self.switch_session = None
        with tempfile.TemporaryDirectory(prefix="olive_fp16_candidate_") as folder:
            path = save_model(model, Path(folder) / "candidate.onnx", external_data=True)
            session = self.sessions.session(str(path), emulation=False)
            outputs = run_session(session, feed)
            del session
        return outputs

    # -- the stages ------------------------------------------------------------------------------------------
    def reference_and_ranges(self):
        names = self.float_names
        exposed = _expose(self.proto, names)
        try:
            session = self.sessions.session(exposed, emulation=True)  # float32, optimizations off: exact tensors
        except Float16Error:
            raise
        except Exception as exc:  # the first session: an IR version or opset this onnxruntime cannot load
            import onnxruntime as ort

            opset = next((o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), None)
            first = first_line(exc)
            raise Float16Error(
                f"{self.source}: onnxruntime {ort.__version__} cannot load IR version {self.proto.ir_version} / "
                f"opset {opset}: {first}; the search needs onnxruntime sessions"
            ) from exc
        all_names = [o.name for o in session.get_outputs()]
        stats = ActivationStats(limit=FP16_MAX / self.overflow_margin)
        reference = []
        self.reference_tensors: list[dict[str, np.ndarray]] = []
        for k, feed in enumerate(self.feeds):
            values = run_session(session, feed)
            by_name = dict(zip(all_names, values, strict=True))
            reference.append([np.asarray(by_name[n]) for n in self.output_names])
            if k == 0:  # the shapes the costs are estimated from (node_cost.py)
                self.shapes = {n: np.shape(v) for n, v in by_name.items()}
                self.shapes.update({n: np.shape(v) for n, v in feed.items()})
            if k < RANKING_SAMPLES:
                self.reference_tensors.append({n: np.asarray(by_name[n]) for n in names})
            stats.observe((name, by_name[name]) for name in names)
        holdout_reference = [
            [np.asarray(v) for v in run_session(session, feed, self.output_names)] for feed in self.holdout
        ]
        self.reference_first = dict(zip(self.output_names, reference[0], strict=True))
        self.costs = node_costs(self.proto, self.labels, self.shapes)
        self.links = links_of(self.proto, self.labels, {n: self.shapes[n] for n in names if n in self.shapes})
        for j, name in enumerate(self.output_names):
            values = [np.asarray(run[j]) for run in reference + holdout_reference]
            floats = [v for v in values if np.issubdtype(v.dtype, np.floating) and v.size]
            if floats and not any(np.isfinite(v).any() for v in floats):
                raise Float16Error(
                    f"data: the float32 model's output '{name}' is NaN/Inf everywhere on the validation data, so "
                    "no candidate's accuracy can be measured (check the data for NaN/Inf inputs)"
                )
        self.sentinels = SentinelLookup(self.values, stats.beyond())
        return reference, holdout_reference, stats.abs_max()

    def range_rules(self, abs_max: dict[str, float], labels: list[str]) -> dict[str, ForcedDecision]:
        """The activation-range rule (activation_stats.range_decisions, shared with calibrated Float16); a tensor
        whose out-of-range values are masking sentinels (sentinels.py) is not an overflow."""
        nodes = ((label, node.input, node.output) for node, label in zip(self.proto.graph.node, labels, strict=True))
        return range_decisions(
            nodes, abs_max, self.overflow_margin, is_sentinel=lambda name: self.sentinels(name) is not None
        )

    def overrulable(self) -> dict[str, ForcedDecision]:
        """Nodes a precision rule (weight underflow: a weight entirely subnormal in float16) keeps in float32,
        forced to float16 for the full-float16 candidate: validation, not the rule, then decides. On a
        MobileNetV3 export, 11 Convs with dead (1e-8) weights: 30% of the FLOPs, accurate in float16."""
        if self.backend.emulated:
            decisions = self.switchable.gates(self.base, {})[1].plan.decisions.values()
        else:
            decisions = self.build({}, emulate=False).report.decisions
        return {
            d.node: ForcedDecision(
                Rule.VALIDATED_FP16,
                f"float16 although {d.detail}: validation met the criteria with it in float16",
                Origin.VALIDATED,
                precision=Precision.FP16,
            )
            for d in decisions
            if d.rule in OVERRULABLE and d.precision is Precision.FP32
        }

    def cost_summary(self, report) -> dict:
        """Float16 share of the result by nodes and by estimated FLOPs, and its Casts."""
        fp16 = {d.node for d in report.decisions if d.precision is Precision.FP16}
        fp32 = {d.node for d in report.decisions if d.precision is Precision.FP32}
        decided = len(fp16) + len(fp32)
        return {
            "fp16_nodes_pct": round(100.0 * len(fp16) / decided, 2) if decided else None,
            **fp16_share(self.costs, fp16, fp32),
            "casts_inserted": report.casts_inserted,
            "shapes": "seen on the first validation feed",
        }

    def note_sentinels(self, report) -> list[dict]:
        """Float16 nodes that read or write a sentinel tensor say so in the report (rule mask_sentinel)."""
        graph_nodes = zip(self.proto.graph.node, self.labels, strict=True)
        edges = ((label, node.input, node.output) for node, label in graph_nodes)
        mark_sentinels(report, sentinel_notes(edges, self.sentinels.found, "on validation data"))
        return self.sentinels.records()

    def rank(self, forced, labels: list[str]) -> tuple[list[str], list[set[str]]]:
        """Main-graph float16 nodes, most error-adding first, from one emulated run with every tensor exposed.

        Also returns cancellation units: a node whose float inputs are much larger than its output (x + c - c)
        loses its accuracy when those inputs are stored in float16, not in its own arithmetic, so it moves
        together with the producers of those inputs.
        """
        names = self.float_names
        samples = self.feeds[: len(self.reference_tensors)]
        if self.backend.emulated:
            runs, classified = self.run_switch(forced, samples, names)
            decisions = classified.plan.decisions.values()
        else:  # a real provider validates, but ranking is a heuristic: emulate it on the CPU
            emulated = self.build(forced, emulate=True)
            decisions = emulated.report.decisions
            proto = emulated.model
            half_of = {
                n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "Cast" and n.attribute[0].i == 10
            }
            rounded = {
                n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "Cast" and n.attribute[0].i == 1
            }
            view = [rounded.get(half_of.get(name, ""), name) for name in names]
            cand_session = self.sessions.session(_expose(proto, view), emulation=True)
            runs = [run_session(cand_session, feed, view) for feed in samples]
        error = dict.fromkeys(names, 0.0)
        magnitude = dict.fromkeys(names, 0.0)
        for ref, run in zip(self.reference_tensors, runs, strict=True):
            cand = dict(zip(names, run, strict=True))
            for name in names:
                r, c = np.asarray(ref[name], np.float64), np.asarray(cand[name], np.float64)
                magnitude[name] += float(np.mean(np.abs(r))) if r.size else 0.0
                with np.errstate(invalid="ignore", over="ignore"):
                    e = float(np.mean(np.abs(c - r)) / (np.mean(np.abs(r)) + 1e-6)) if r.size else 0.0
                error[name] += e if math.isfinite(e) else math.inf
        fp16_labels = {d.node for d in decisions if d.precision is Precision.FP16}
        # A control-flow node is float32 at its interface but runs float16 bodies: forcing it forces them.
        fp16_labels |= {label for label, inner in self.bodies.items() if fp16_labels.intersection(inner)}
        scores = []
        for position, (node, label) in enumerate(zip(self.proto.graph.node, labels, strict=True)):
            if label not in fp16_labels:
                continue
            e_out = max((error.get(o, 0.0) for o in node.output), default=0.0)
            e_in = max((error.get(i, 0.0) for i in node.input), default=0.0)
            local = 0.0 if (math.isinf(e_out) and math.isinf(e_in)) else e_out - e_in
            scores.append((-local, position, label))
        scores.sort()
        self.rank_scores = {label: -negative for negative, _, label in scores}
        producer_label = {
            o: label for node, label in zip(self.proto.graph.node, labels, strict=True) for o in node.output
        }
        units = []
        for node, label in zip(self.proto.graph.node, labels, strict=True):
            out = max((magnitude.get(o, 0.0) for o in node.output), default=0.0)
            big_inputs = {
                producer_label[i]
                for i in node.input
                if i in producer_label and i in magnitude and magnitude[i] > CANCELLATION_RATIO * out + 1e-12
            }
            if big_inputs and label in fp16_labels:
                units.append({label, *(b for b in big_inputs if b in fp16_labels)})
        return [label for _, _, label in scores], units


def _significant(value: float, digits: int = 2) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _check_search_options(overflow_margin, holdout_fraction, refine_budget, strict, progress, provider) -> None:
    """Each option of the search has the type and range it needs (NaN compares false with everything:
    `overflow_margin=nan` turned the range rules off; `strict="false"` is a true string)."""

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not number(overflow_margin) or overflow_margin < 1:
        raise Float16Error(f"overflow_margin: expected a finite number >= 1, got {overflow_margin!r}")
    if not number(holdout_fraction) or not 0 <= holdout_fraction < 1:
        raise Float16Error(f"holdout_fraction: expected a number in [0, 1), got {holdout_fraction!r}")
    if not isinstance(refine_budget, int) or isinstance(refine_budget, bool) or refine_budget < 0:
        raise Float16Error(f"refine_budget: expected a whole number >= 0, got {refine_budget!r}")
    for name, value in (("strict", strict), ("progress", progress)):
        if not isinstance(value, bool):
            raise Float16Error(f"{name}: expected true or false, got {value!r}")
    if not isinstance(provider, str) or not provider:
        raise Float16Error(f"provider: expected an execution provider name, got {provider!r}")


def _split_feeds(data: Iterable[Feed], holdout_fraction: float) -> tuple[list[Feed], list[Feed]]:
    feeds = list(data)
    if not feeds:
        raise Float16Error("data: no validation samples given (need at least one input feed)")
    if not 0 <= holdout_fraction < 1:
        raise Float16Error(f"holdout_fraction: expected a number in [0, 1), got {holdout_fraction}")
    n_hold = 0 if len(feeds) < 2 or holdout_fraction == 0 else max(1, math.floor(len(feeds) * holdout_fraction))
    return feeds[: len(feeds) - n_hold], feeds[len(feeds) - n_hold :]


def auto_mixed_precision(
    model: ModelLike,
    data: Iterable[Feed],
    *,
    rtol: float | None = 1e-2,
    atol: float | None = 1e-3,
    max_abs: float | None = None,
    mean_abs: float | None = None,
    p999_abs: float | None = None,
    min_cosine: float | None = None,
    min_psnr: float | None = None,
    per_output: dict[str, dict[str, float]] | None = None,
    provider: str = "CUDAExecutionProvider",
    strict: bool = False,
    keep_io_types: bool | list[str] = False,
    op_block_list: list[str] | None = None,
    node_block_list: list[str] | None = None,
    op_include_list: list[str] | None = None,
    node_include_list: list[str] | None = None,
    clamp_weights: bool = False,
    max_reduction_elements: int | None = None,
    extra_rules: list | None = None,
    holdout_fraction: float = 0.25,
    overflow_margin: float = 2.0,
    refine_budget: int = 64,
    on_failure: str = "fp32",
    progress: bool = True,
    emulation_margin: float = EMULATION_MARGIN,
) -> ConversionResult:
    """Mixed precision validated on real data: as much float16 as the accuracy criteria allow.

    `data` is an iterable of input feeds (dicts name -> array). The last `holdout_fraction` of them is held
    out and only used for the final check. Criteria (all optional, at least one): `rtol`/`atol` (numpy
    allclose, like onnxconverter-common), `max_abs`, `mean_abs`, `p999_abs` (99.9th percentile of the
    absolute error), `min_cosine`, `min_psnr` (dB, range of the float32 output); `per_output` overrides them
    by output name. Validation runs on `provider` when it really works here; otherwise float16 storage is
    emulated on the CPU (or, with `strict=True`, a ProviderUnavailableError is raised). When no candidate
    meets the criteria, `on_failure="fp32"` returns the all-float32-nodes candidate with the report saying
    so; `on_failure="raise"` raises CriteriaNotMetError. With emulation a candidate must meet the criteria within
    `emulation_margin` of each tolerance; the report says how much of each tolerance the result uses.
    """
    start = time.perf_counter()
    if on_failure not in ("fp32", "raise"):
        raise Float16Error(f"on_failure: expected 'fp32' or 'raise', got {on_failure!r}")
    _check_search_options(overflow_margin, holdout_fraction, refine_budget, strict, progress, provider)
    if not (isinstance(emulation_margin, (int, float)) and 0 < emulation_margin <= 1):
        raise Float16Error(f"emulation_margin: expected a fraction in (0, 1], got {emulation_margin!r}")
    criteria = Criteria(rtol, atol, max_abs, mean_abs, p999_abs, min_cosine, min_psnr, dict(per_output or {}))
    base = ConversionOptions(
        keep_io_types=keep_io_types,
        op_block_list=op_block_list,
        node_block_list=node_block_list,
        op_include_list=op_include_list,
        node_include_list=node_include_list,
        clamp_weights=clamp_weights,
        max_reduction_elements=max_reduction_elements,
        extra_rules=extra_rules,
        provider=provider,
    )
    base_dir = None
    if isinstance(model, onnx.ModelProto):
        if has_external_data(model):
            raise Float16Error(
                "model: this ModelProto keeps its weights in external files and has no folder to find them in; "
                "pass the model's path instead (or load it with onnx.load(path) to bring the data in memory)"
            )
        proto = load(model).proto  # the checks and repairs of the path route (a cycle is refused, issue 14.2)
    else:
        # Lazily loaded: external tensors stay in their files (memory-mapped when read), so the search costs
        # about the model's size in memory, and the serialized proto only references them.
        proto = ir_serde.serialize_model(load_model_file(model)[0])
        if has_external_data(proto):
            base_dir = Path(model).resolve().parent
    unknown = sorted(set(criteria.per_output) - {o.name for o in proto.graph.output})
    if unknown:
        raise Float16Error(f"per_output: {unknown} are not outputs of the model")
    feeds, holdout = _split_feeds(data, holdout_fraction)
    check_feeds(proto, feeds + holdout)
    backend = choose_backend(provider, strict=strict)
    search = _Search(
        proto,
        feeds,
        holdout,
        criteria,
        backend,
        base,
        overflow_margin,
        progress,
        refine_budget,
        base_dir,
        emulation_margin,
    )
    search.source = str(model) if not isinstance(model, onnx.ModelProto) else "model"
    try:
        final, notes = _run_search(search)
    finally:
        search.bar.close()

    result = search.build(final.forced, emulate=False)
    result.external_data = base_dir is not None  # saved like the input: weights in a data file
    holdout_errors = None
    holdout_failures: list[str] = []
    if holdout:
        check = search.validate(
            final.forced, holdout, search.holdout_reference, "holdout", load_check=False, early_exit=False
        )
        holdout_errors, holdout_failures = check.errors, check.failures
    if not final.passed and on_failure == "raise":
        raise CriteriaNotMetError(
            "no candidate meets the accuracy criteria, not even with every node in float32: "
            + "; ".join(final.failures[:3])
        )
    report = result.report
    report.notes.extend(notes)
    sentinels = search.note_sentinels(report)
    report.cost = search.cost_summary(report)
    if holdout and holdout_failures and final.passed:
        report.warnings.append(
            "criteria met on validation data but not on held-out data: " + "; ".join(holdout_failures[:3])
        )
    report.search = SearchReport(
        backend=backend.to_dict(),
        providers_used=sorted(search.sessions.providers_seen),
        criteria=criteria.to_dict(),
        emulation_margin=emulation_margin if backend.emulated else None,
        criteria_applied=search.criteria.to_dict(),
        tolerance_used=criteria.usage(final.errors or {}),
        holdout_tolerance_used=criteria.usage(holdout_errors or {}),
        criteria_met=final.passed,
        holdout_met=(not holdout_failures) if holdout else None,
        validation_samples=len(feeds),
        holdout_samples=len(holdout),
        candidates_tried=search.tried,
        sessions_created=search.sessions.created,
        seconds=round(time.perf_counter() - start, 3),
        validation_errors={k: v.to_dict() for k, v in (final.errors or {}).items()},
        holdout_errors={k: v.to_dict() for k, v in (holdout_errors or {}).items()},
        failures=final.failures,
        cost=report.cost,
        sentinels=sentinels,
        history=search.history,
    )
    report.seconds = time.perf_counter() - start
    return result


def _run_search(search: _Search) -> tuple[Candidate, list[str]]:
    """The search's stages, then the guarantee: never more float32 than a passing candidate already seen."""
    chosen, notes = _stages(search)
    better = sorted((c for c in search.passing if c.loads is not False and _fewer_fp32(c, chosen)), key=Candidate.order)
    for candidate in better:
        if search.backend.emulated and candidate.loads is None:
            problems = search.load_check(candidate.forced, search.feeds[:1])
            candidate.loads = not problems
            search.history.append({"stage": "load check (seen earlier)", "passed": not problems, "failures": problems})
        if candidate.loads is not False:
            notes.append(
                f"a candidate seen earlier met the criteria with {candidate.nodes_fp32} float32 nodes, fewer than the "
                f"{chosen.nodes_fp32} of the search's pick: returned it"
            )
            return candidate, notes
    return chosen, notes


def _fewer_fp32(candidate: Candidate, chosen: Candidate) -> bool:
    """Fewer float32 nodes than the pick (or as many and fewer float32 FLOPs), or the pick did not pass."""
    if candidate.nodes_fp32 is None:
        return False
    return not chosen.passed or chosen.nodes_fp32 is None or candidate.order() < chosen.order()


def _stages(search: _Search) -> tuple[Candidate, list[str]]:
    notes: list[str] = []
    labels = search.labels
    reference, search.holdout_reference, abs_max = search.reference_and_ranges()
    if search.backend.emulated:
        search.switch()
    label_position = {label: i for i, label in enumerate(labels)}
    fused: dict[str, set[str]] = {}
    for unit in fusion_units(search.proto.graph, labels):
        for member in unit:
            fused.setdefault(member, set()).update(unit)
    rules = search.range_rules(abs_max, labels)
    for label, record in list(rules.items()):  # a fusion unit moves as a whole
        for member in sorted(fused.get(label, ()), key=lambda m: label_position.get(m, 0)):
            rules.setdefault(
                member, ForcedDecision(record.rule, f"fused with '{label}': {record.detail}", Origin.FUSED, label)
            )

    # Most aggressive first: every node float16 but for the static rules (sentinels handled). A model fine in
    # float16 stops after this one validation, whatever its measured ranges say.
    full = search.validate(search.overrulable(), search.feeds, reference, "full float16", load_check=False)
    if full.passed:
        chosen = _loadable(search, full, reference)
        if chosen is not None:
            notes.append("full float16 (static rules only) met the criteria at its first validation")
            return chosen, notes
    if rules:
        first = search.validate(rules, search.feeds, reference, "range rules", load_check=False)
        if first.passed:
            chosen = _loadable(search, first, reference)
            if chosen is not None:
                notes.append("the candidate after range rules met the criteria at its first validation")
                return chosen, notes

    ranked, cancellation = search.rank(rules, labels)
    group_of = {label: set(members) for label, members in fused.items()}
    for unit in cancellation:
        for member in unit:
            group_of.setdefault(member, set()).update(unit)

    # Among nodes that add about the same error (two significant digits), the one whose group (the node with
    # the units it moves with) costs least comes first: that is what a prefix then keeps in float32.
    def group_cost(label: str) -> float:
        return sum(search.costs[m].weight for m in group_of.get(label, {label}) if m in search.costs)

    position = {label: i for i, label in enumerate(ranked)}
    ranked.sort(key=lambda label: (-_significant(search.rank_scores[label]), group_cost(label), position[label]))
    rank_of = {label: i for i, label in enumerate(ranked)}

    def forced_for(prefix: list[str]) -> dict[str, ForcedDecision]:
        forced = dict(rules)
        for label in prefix:
            for member in sorted(group_of.get(label, {label}), key=lambda m: label_position.get(m, 0)):
                if member not in forced:
                    detail = f"accuracy search: ranked #{rank_of[label] + 1} of {len(ranked)} by the error it adds"
                    if member != label:
                        detail += f" (moves with '{label}')"
                    forced[member] = ForcedDecision(
                        Rule.ACCURACY, detail, Origin.ACCURACY, label if member != label else None
                    )
        return forced

    results: dict[int, Candidate] = {}
    n = len(ranked)

    def check(k: int) -> Candidate:
        if k not in results:  # accuracy only: the load check waits until a prefix is chosen
            results[k] = search.validate(
                forced_for(ranked[:k]), search.feeds, reference, f"prefix {k}", load_check=False
            )
        return results[k]

    def smallest_passing(lo: int) -> int | None:
        """Shortest passing prefix above `lo` (known to fail): exponential steps, then bisection."""
        hi, step, k = None, 1, lo + 1
        while k < n:
            if check(k).passed:
                hi = k
                break
            lo, step = k, step * 2
            k = lo + step
        if hi is None:
            if n > lo and check(n).passed:
                hi = n
            else:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if check(mid).passed:
                hi = mid
            else:
                lo = mid
        return hi

    lo = 0
    while True:
        hi = smallest_passing(lo)
        if hi is None:
            everything = dict(forced_for(ranked))
            for label in labels:
                everything.setdefault(
                    label, ForcedDecision(Rule.ACCURACY, "criteria not met with any float16 node", Origin.FALLBACK)
                )
            last = search.validate(everything, search.feeds, reference, "all float32", early_exit=False)
            notes.append(
                "no candidate met the criteria; returned the candidate with every node in float32"
                + (" (inputs/outputs are float16: try keep_io_types=True)" if not search.base.keep_io_types else "")
            )
            return last, notes
        # prefix hi - 1 fails and prefix hi passes: the unit ranked hi is the one that made it pass
        critical = group_of.get(ranked[hi - 1], {ranked[hi - 1]})
        chosen = _loadable(search, results[hi], reference, critical)
        if chosen is not None:
            return chosen, notes
        results[hi] = Candidate(results[hi].forced, False, ["failed to load"], results[hi].errors)
        lo = hi


def _loadable(
    search: _Search, candidate: Candidate, reference, critical: set[str] | frozenset[str] = frozenset()
) -> Candidate | None:
    """Refine an accurate candidate, then build it for real: it must load with ORT's optimizations on.

    Emulated validation cannot see ORT's graph fusions, so the real model is checked, once for the refined
    candidate and, if that fails, once for the unrefined one; None when neither loads (the search goes on).
    """
    refined = _refine(search, candidate, reference, critical)
    if not search.backend.emulated:
        return refined
    for option in [refined] if refined is candidate else [refined, candidate]:
        problems = search.load_check(option.forced, search.feeds[:1])
        option.loads = not problems
        stage = "load check" + ("" if option is refined else " (unrefined)")
        search.history.append({"stage": stage, "passed": not problems, "failures": problems[:3]})
        if not problems:
            return option
    return None


def _refine(
    search: _Search, best: Candidate, reference, critical: set[str] | frozenset[str] = frozenset()
) -> Candidate:
    """Give back to float16 the forced nodes that were not needed; least suspicious first.

    A prefix ranks above the critical node only by an error estimate, and a fusion unit moved as a whole may
    not need all its members. Whole chunks are tried first and split only when they fail (delta debugging):
    when most of them can go back, that costs a few tries, not one per node. With the emulated backend each
    try is a run of the one gated session, not a new session.
    """
    forced = dict(best.forced)
    accuracy = [m for m, record in forced.items() if record.origin is Origin.ACCURACY]
    fused = [m for m, record in forced.items() if record.origin is Origin.FUSED]
    state = {"forced": forced, "best": best, "budget": search.refine_budget}

    def give_back(members: list[str]) -> None:
        if not members or state["budget"] <= 0:
            return
        state["budget"] -= 1
        trial = {m: v for m, v in state["forced"].items() if m not in set(members)}
        label = members[0] if len(members) == 1 else f"{len(members)} nodes"
        candidate = search.validate(trial, search.feeds, reference, f"refine -{label}", load_check=False)
        if candidate.passed:
            state["forced"], state["best"] = trial, candidate
        elif len(members) > 1:
            half = len(members) // 2
            give_back(members[:half])
            give_back(members[half:])

    # Most expensive first, Casts counted (node_cost.give_back_order): the first chunks tried, and the halves
    # split off first when one fails, are where float16 gains most.
    fp32 = set(forced)
    ordered = give_back_order(list(reversed(accuracy)), search.costs, search.links, fp32)
    # The nodes forced before the critical unit (the last one the prefix search added: without it the
    # prefix failed) are the likeliest not needed: all of them first, in one try, then the critical unit.
    # enc1500 of bench/amp_speed.py: the cancellation ranked 7th behind six LayerNorm units, 1 try, not ~40.
    give_back([m for m in ordered if m not in critical])
    give_back([m for m in ordered if m in critical])
    give_back(give_back_order(list(reversed(fused)), search.costs, search.links, fp32))
    return state["best"]


__all__ = ["CriteriaNotMetError", "auto_mixed_precision", "check_feeds"]
