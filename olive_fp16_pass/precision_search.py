"""The mixed-precision search: one object that owns its state, from the reference run to the chosen candidate.

Stages, in order (each validates candidates through a `Validator`, candidate_runs.py):
1. the float32 model runs once with every tensor exposed: per-tensor ranges, the reference outputs, the shapes
   the node costs are estimated from (node_cost.py);
2. full float16 first (the static rules only, masking sentinels converted, the weight-underflow rule
   overruled): a model fine in float16 stops here, after one validation;
3. otherwise nodes that read or write a tensor beyond float16's range (with a safety margin; masking
   sentinels excepted) stay float32, with their measured value as the reason; validated once;
4. otherwise one emulated run of that candidate ranks the remaining nodes by the error each adds
   (error_ranking.py);
5. the shortest passing prefix of that ranking (exponential steps, then bisection, whole fusion units at a
   time); then the prefix nodes that were not needed go back to float16, the most expensive first;
6. the result never keeps more nodes in float32 than a candidate already seen to pass (and load).
Candidates are validated on the target execution provider when it really works here, else with float16
storage emulated on the CPU; never with the CPU provider running a float16 graph. A candidate that fails to
load or run counts as a failed candidate; the search goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from olive_fp16_pass.activation_stats import ActivationStats, range_decisions
from olive_fp16_pass.candidate_runs import (
    CandidateBuilder,
    Feed,
    GatedEmulator,
    GatedValidator,
    ProviderValidator,
    Validator,
)
from olive_fp16_pass.compare import Criteria, OutputError, compare_outputs
from olive_fp16_pass.error_ranking import Ranking, magnitudes, rank_nodes, relative_errors
from olive_fp16_pass.errors import Float16Error, first_line
from olive_fp16_pass.float16 import ConversionResult, mark_sentinels
from olive_fp16_pass.fusion_units import epsilon_core
from olive_fp16_pass.gc_pause import paused_gc
from olive_fp16_pass.graph_edit import expose_outputs
from olive_fp16_pass.node_cost import NodeCost, fp16_share, give_back_order, links_of, node_costs, static_shapes
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import OVERRULABLE, ForcedDecision, Origin, Precision, Rule
from olive_fp16_pass.progress import progress_bar
from olive_fp16_pass.runtime import SessionFactory, ValidationBackend, run_session
from olive_fp16_pass.search_model import SearchModel
from olive_fp16_pass.sentinels import SentinelLookup, sentinel_notes
from olive_fp16_pass.weight_ranges import FP16_MAX

RANKING_SAMPLES = 4  # feeds used to rank nodes by the error they add

Forced = dict[str, ForcedDecision]


@dataclass
class Candidate:
    forced: Forced
    passed: bool
    failures: list[str]
    errors: dict[str, OutputError] | None
    nodes_fp32: int | None = None  # nodes (subgraphs included) the candidate runs in float32, static rules included
    flops_fp32: float | None = None  # their estimated FLOPs (main graph, node_cost.py)
    loads: bool | None = None  # the real model loads with ORT's optimizations on (None: not checked yet)

    def order(self) -> tuple[float, float]:
        """Fewer float32 nodes first, then fewer float32 FLOPs."""
        return (self.nodes_fp32 if self.nodes_fp32 is not None else math.inf, self.flops_fp32 or 0.0)

    def fewer_fp32_than(self, chosen: Candidate) -> bool:
        """Fewer float32 nodes than `chosen` (or as many and fewer float32 FLOPs), or `chosen` did not pass."""
        if self.nodes_fp32 is None:
            return False
        return not chosen.passed or chosen.nodes_fp32 is None or self.order() < chosen.order()


@dataclass
class SearchSettings:
    """The search's knobs, checked by `auto_mixed_precision` before they get here."""

    criteria: Criteria  # as the user gave them
    options: ConversionOptions
    overflow_margin: float
    refine_budget: int
    emulation_margin: float
    progress: bool
    source: str = "model"  # the model's path, for messages


@dataclass
class SearchOutcome:
    """What the search chose, and the real model built from it."""

    final: Candidate
    notes: list[str]
    result: ConversionResult
    holdout: Candidate | None  # the chosen candidate on the held-out feeds (None: none held out)


def _significant(value: float, digits: int = 2) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


class MixedPrecisionSearch:
    """Everything one search measured and tried; `run()` does it all once."""

    def __init__(
        self,
        model: SearchModel,
        feeds: list[Feed],
        holdout: list[Feed],
        backend: ValidationBackend,
        settings: SearchSettings,
    ) -> None:
        self.model = model
        self.feeds = feeds
        self.holdout = holdout
        self.backend = backend
        self.settings = settings
        self.options = settings.options
        # Emulation approximates the GPU's kernels: accept there only within a fraction of each tolerance.
        criteria = settings.criteria
        self.criteria = criteria.tightened(settings.emulation_margin) if backend.emulated else criteria
        # in_memory: model_io.load checked the source, and every session's model derives from it
        self.sessions = SessionFactory(backend, model.base_dir, model.big, in_memory=True)
        self.builder = CandidateBuilder(model, self.options)
        self.sentinels = SentinelLookup(model.values, {})  # which tensors beyond range are masking sentinels
        self.tried = 0
        self.history: list[dict] = []
        self.passing: list[Candidate] = []  # every candidate that met the criteria on the validation feeds
        self.costs: dict[str, NodeCost] = {}  # estimated per node once the reference run gave the shapes
        self.links: dict[str, list[tuple[str, int]]] = {}
        self._emulator: GatedEmulator | None = None
        self.validator: Validator | None = None
        self.bar = progress_bar("mixed precision search", "candidate", enabled=settings.progress)

    # -- the whole search -------------------------------------------------------------------------------------
    def run(self) -> SearchOutcome:
        # The cyclic collector's passes were 3% of a search (enc300 of bench/amp_speed.py, sampled with py-spy):
        # paused, as during a conversion; not for a big model, whose discarded onnx-ir copies (cycles: nodes and
        # values point at each other) only the collector frees.
        with paused_gc(not self.model.big):
            return self._run()

    def _run(self) -> SearchOutcome:
        try:
            abs_max = self.measure()
            final, notes = self.choose(abs_max)
            final = self.keep_epsilons(final, notes)
        finally:
            self.bar.close()
        result = self.builder.build(final.forced)
        holdout = None
        if self.holdout:
            holdout = self.validate(
                final.forced, self.holdout, self.holdout_reference, "holdout", load_check=False, early_exit=False
            )
        return SearchOutcome(final, notes, result, holdout)

    def choose(self, abs_max: dict[str, float]) -> tuple[Candidate, list[str]]:
        """The stages' pick, then the guarantee: never more float32 than a passing candidate already seen."""
        chosen, notes = self.stages(abs_max)
        better = [c for c in self.passing if c.loads is not False and c.fewer_fp32_than(chosen)]
        for candidate in sorted(better, key=Candidate.order):
            if candidate.loads is None:
                problems = self.load_check(candidate.forced)
                candidate.loads = not problems
                if self.validator.emulated:  # a real provider's runs were the load check
                    stage = "load check (seen earlier)"
                    self.history.append({"stage": stage, "passed": not problems, "failures": problems})
            if candidate.loads:
                notes.append(
                    f"a candidate seen earlier met the criteria with {candidate.nodes_fp32} float32 nodes, fewer "
                    f"than the {chosen.nodes_fp32} of the search's pick: returned it"
                )
                return candidate, notes
        return chosen, notes

    def keep_epsilons(self, final: Candidate, notes: list[str]) -> Candidate:
        """The pick with the normalisation of its float16 LayerNorms whose epsilon is not ORT's default kept
        float32, as the Float16 conversion does (fusion_units.epsilon_core: onnxruntime <= 1.26 would fuse them
        with epsilon 1e-5); validated and load-checked once more, kept only if it passes."""
        if not final.passed:
            return final
        by_label = {d.node: d for d in self.validator.decisions(final.forced)}
        labels = {id(node): self.model.label(node) for node in self.model.nodes}
        decisions = {key: by_label[label] for key, label in labels.items() if label in by_label}
        extra: Forced = {}
        for unit in self.model.fusion_units:
            detail = epsilon_core(unit, decisions)
            for node in unit.core if detail else ():
                extra.setdefault(self.model.label(node), ForcedDecision(Rule.FUSION_BOUNDARY, detail, Origin.FUSED))
        if not extra:
            return final
        stage = f"LayerNorm epsilon float32 (+{len(extra)} nodes)"
        candidate = self.validate({**final.forced, **extra}, self.feeds, self.reference, stage)
        if not candidate.passed:
            return final
        notes.append(f"{len(extra)} nodes of LayerNorms whose epsilon is not 1e-5 kept float32 (fusion_units.py)")
        return candidate

    # -- measuring ------------------------------------------------------------------------------------------------
    def measure(self) -> dict[str, float]:
        """The float32 reference run (every tensor exposed) and what it gives: reference outputs, ranges,
        sentinels, shapes and costs; then the validator the candidates go through. Returns per-tensor |max|."""
        model = self.model
        names = model.float_names
        session = self._reference_session()
        all_names = [o.name for o in session.get_outputs()]
        stats = ActivationStats(limit=FP16_MAX / self.settings.overflow_margin)
        self.reference: list[list[np.ndarray]] = []
        self.reference_tensors: list[dict[str, np.ndarray]] = []  # every float tensor, on the ranking samples
        shapes: dict[str, tuple[int, ...]] = {}
        for k, feed in enumerate(self.feeds):
            by_name = dict(zip(all_names, run_session(session, feed), strict=True))
            self.reference.append([np.asarray(by_name[n]) for n in model.output_names])
            if k == 0:  # the shapes the costs are estimated from (node_cost.py)
                shapes = {n: np.shape(v) for n, v in by_name.items()}
                shapes.update({n: np.shape(v) for n, v in feed.items()})
            if k < RANKING_SAMPLES:
                self.reference_tensors.append({n: np.asarray(by_name[n]) for n in names})
            stats.observe((name, by_name[name]) for name in names)
        self.holdout_reference = [
            [np.asarray(v) for v in run_session(session, feed, model.output_names)] for feed in self.holdout
        ]
        del session
        self.reference_first = dict(zip(model.output_names, self.reference[0], strict=True))
        self._check_reference_finite()
        labelled = list(zip(model.labels, model.nodes, strict=True))  # both read off the same node objects
        self.costs = node_costs(labelled, observed=shapes, static=static_shapes(model.proto))
        self.links = links_of(labelled, None, {n: shapes[n] for n in names if n in shapes})
        self.sentinels = SentinelLookup(model.values, stats.beyond())
        builder = self.builder
        self.validator = (
            GatedValidator(self.emulator(), builder, self.sessions)
            if self.backend.emulated
            else ProviderValidator(builder, self.sessions)
        )
        return stats.abs_max()

    def _reference_session(self):
        """Float32, optimizations off: exact tensors. The first session: a model this onnxruntime cannot load
        (an IR version or opset too new) is said here, with the versions."""
        try:
            return self.sessions.session(expose_outputs(self.model.proto, self.model.float_names), emulation=True)
        except Float16Error:
            raise
        except Exception as exc:
            import onnxruntime as ort

            proto = self.model.proto
            opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
            raise Float16Error(
                f"{self.settings.source}: onnxruntime {ort.__version__} cannot load IR version {proto.ir_version} / "
                f"opset {opset}: {first_line(exc)}; the search needs onnxruntime sessions"
            ) from exc

    def _check_reference_finite(self) -> None:
        for j, name in enumerate(self.model.output_names):
            values = [np.asarray(run[j]) for run in self.reference + self.holdout_reference]
            floats = [v for v in values if np.issubdtype(v.dtype, np.floating) and v.size]
            if floats and not any(np.isfinite(v).any() for v in floats):
                raise Float16Error(
                    f"data: the float32 model's output '{name}' is NaN/Inf everywhere on the validation data, so "
                    "no candidate's accuracy can be measured (check the data for NaN/Inf inputs)"
                )

    def emulator(self) -> GatedEmulator:
        """The gated emulation, built once when first needed (always for ranking, also for validation when
        emulated)."""
        if self._emulator is None:
            flops = sum(cost.flops for cost in self.costs.values())
            self._emulator = GatedEmulator(self.model, self.sessions, self.options, flops)
        return self._emulator

    # -- validating -------------------------------------------------------------------------------------------------
    def validate(
        self,
        forced: Mapping[str, ForcedDecision],
        feeds,
        reference,
        stage: str,
        *,
        load_check: bool = True,
        early_exit: bool = True,
    ) -> Candidate:
        """Accuracy on `feeds`; a passing candidate must also load for real (ORT's fusions included) when
        `load_check` is set. `early_exit`: a failure on the first feed that more feeds cannot undo ends the
        validation there (off where the report shows the errors: held-out, fallback)."""
        self.tried += 1
        self.bar.update(1)
        start = time.perf_counter()
        nodes_fp32 = flops_fp32 = None
        try:
            errors, failures, decisions = self._accuracy(forced, feeds, reference, early_exit)
            fp32 = [d.node for d in decisions if d.precision is Precision.FP32]
            nodes_fp32 = len(fp32)
            flops_fp32 = sum(self.costs[label].flops for label in fp32 if label in self.costs)
            if not failures and load_check:
                failures = self.load_check(forced)
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

    def _accuracy(self, forced, feeds, reference, early_exit: bool):
        """(errors, failures, decisions): the first feed alone first; a failure that more feeds cannot undo
        (NaN, allclose, max_abs) ends there: most candidates of a search fail, most of them on every feed."""
        names = self.model.output_names
        split = 1 if len(feeds) > 1 and early_exit else len(feeds)
        outputs, decisions = self.validator.run(forced, feeds, slice(0, split))
        errors = compare_outputs(names, reference[:split], outputs, self.criteria)
        if split == len(feeds):
            return errors, self.criteria.check(errors), decisions
        failures = self.criteria.lasting_failures(errors)
        if failures:
            return errors, [f"{f} (first feed; the others not run)" for f in failures], decisions
        outputs += self.validator.run(forced, feeds, slice(split, None))[0]
        errors = compare_outputs(names, reference, outputs, self.criteria)
        return errors, self.criteria.check(errors), decisions

    def load_check(self, forced: Mapping[str, ForcedDecision]) -> list[str]:
        """Why the real candidate fails to load or run with ORT's optimizations on ([]: it loads)."""
        return self.validator.load_problems(forced, self.feeds[0], self.reference_first)

    # -- the stages ---------------------------------------------------------------------------------------------
    def stages(self, abs_max: dict[str, float]) -> tuple[Candidate, list[str]]:
        notes: list[str] = []
        fused = self._fusion_groups()
        rules = self.range_rules(abs_max, fused)
        # Most aggressive first: every node float16 but for the static rules (sentinels handled). A model fine in
        # float16 stops after this one validation, whatever its measured ranges say.
        full = self.validate(self.overrulable(), self.feeds, self.reference, "full float16", load_check=False)
        if full.passed:
            chosen = self.loadable(full)
            if chosen is not None:
                notes.append("full float16 (static rules only) met the criteria at its first validation")
                return chosen, notes
        if rules:
            first = self.validate(rules, self.feeds, self.reference, "range rules", load_check=False)
            if first.passed:
                chosen = self.loadable(first)
                if chosen is not None:
                    notes.append("the candidate after range rules met the criteria at its first validation")
                    return chosen, notes
        return PrefixSearch(self, rules, fused).run(notes)

    def _fusion_groups(self) -> dict[str, set[str]]:
        """label -> the labels of the fusion unit it belongs to (fusion_units.py): a unit moves as a whole."""
        fused: dict[str, set[str]] = {}
        for unit in self.model.fusion_units:
            members = {self.model.label(node) for node in unit.nodes}
            for member in members:
                fused.setdefault(member, set()).update(members)
        return fused

    def range_rules(self, abs_max: dict[str, float], fused: dict[str, set[str]]) -> Forced:
        """The activation-range rule (activation_stats.range_decisions, shared with calibrated Float16), each
        forced node's fusion unit with it; a tensor whose out-of-range values are masking sentinels
        (sentinels.py) is not an overflow."""
        rules = range_decisions(
            self.model.edges(),
            abs_max,
            self.settings.overflow_margin,
            is_sentinel=lambda name: self.sentinels(name) is not None,
        )
        position = {label: i for i, label in enumerate(self.model.labels)}
        for label, record in list(rules.items()):
            for member in sorted(fused.get(label, ()), key=lambda m: position.get(m, 0)):
                rules.setdefault(
                    member, ForcedDecision(record.rule, f"fused with '{label}': {record.detail}", Origin.FUSED, label)
                )
        return rules

    def overrulable(self) -> Forced:
        """Nodes a precision rule (weight underflow: a weight entirely subnormal in float16) keeps in float32,
        forced to float16 for the full-float16 candidate: validation, not the rule, then decides. On a
        MobileNetV3 export, 11 Convs with dead (1e-8) weights: 30% of the FLOPs, accurate in float16."""
        return {
            d.node: ForcedDecision(
                Rule.VALIDATED_FP16,
                f"float16 although {d.detail}: validation met the criteria with it in float16",
                Origin.VALIDATED,
                precision=Precision.FP16,
            )
            for d in self.validator.decisions({})
            if d.rule in OVERRULABLE and d.precision is Precision.FP32
        }

    def rank(self, forced: Forced) -> Ranking:
        """Main-graph float16 nodes of `forced`, most error-adding first, from one emulated run with every
        tensor exposed (error_ranking.py), whatever validates the candidates."""
        names = self.model.float_names
        samples = self.feeds[: len(self.reference_tensors)]
        runs, classified = self.emulator().run(forced, samples, names)
        per_sample = magnitudes(self.reference_tensors, names)
        error = relative_errors(self.reference_tensors, per_sample, runs, names)
        total = {name: sum(sample[name] for sample in per_sample) for name in names}
        fp16 = {d.node for d in classified.plan.decisions.values() if d.precision is Precision.FP16}
        return rank_nodes(self.model, error, total, fp16)

    def loadable(self, candidate: Candidate, critical: set[str] | frozenset[str] = frozenset()) -> Candidate | None:
        """Refine an accurate candidate, then check its real model loads with ORT's optimizations on.

        Emulated validation cannot see ORT's graph fusions, so the real model is checked, once for the refined
        candidate and, if that fails, once for the unrefined one; None when neither loads (the search goes on).
        """
        refined = Refinement(self, candidate, critical).run()
        for option in [refined] if refined is candidate else [refined, candidate]:
            problems = self.load_check(option.forced)
            option.loads = not problems
            if self.validator.emulated:  # a real provider's runs were the load check: nothing new to say
                stage = "load check" + ("" if option is refined else " (unrefined)")
                self.history.append({"stage": stage, "passed": not problems, "failures": problems[:3]})
            if not problems:
                return option
        return None

    # -- the report ---------------------------------------------------------------------------------------------
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
        mark_sentinels(report, sentinel_notes(self.model.edges(), self.sentinels.found, "on validation data"))
        return self.sentinels.records()


@dataclass
class PrefixSearch:
    """Stage 5: the shortest passing prefix of the error ranking, whole groups (fusion and cancellation units)
    at a time; a prefix that passes but does not load makes the search go on past it."""

    search: MixedPrecisionSearch
    rules: Forced
    fused: dict[str, set[str]]
    results: dict[int, Candidate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        search = self.search
        ranking = search.rank(self.rules)
        self.group_of = {label: set(members) for label, members in self.fused.items()}
        for unit in ranking.cancellation:
            for member in unit:
                self.group_of.setdefault(member, set()).update(unit)
        # Among nodes that add about the same error (two significant digits), the one whose group (the node with
        # the units it moves with) costs least comes first: that is what a prefix then keeps in float32.
        position = {label: i for i, label in enumerate(ranking.order)}
        self.ranked = sorted(
            ranking.order,
            key=lambda label: (-_significant(ranking.scores[label]), self._group_cost(label), position[label]),
        )
        self.rank_of = {label: i for i, label in enumerate(self.ranked)}
        self.position = {label: i for i, label in enumerate(search.model.labels)}

    def _group_cost(self, label: str) -> float:
        costs = self.search.costs
        return sum(costs[m].weight for m in self.group_of.get(label, {label}) if m in costs)

    def forced_for(self, prefix: list[str]) -> Forced:
        forced = dict(self.rules)
        n = len(self.ranked)
        for label in prefix:
            for member in sorted(self.group_of.get(label, {label}), key=lambda m: self.position.get(m, 0)):
                if member not in forced:
                    detail = f"accuracy search: ranked #{self.rank_of[label] + 1} of {n} by the error it adds"
                    if member != label:
                        detail += f" (moves with '{label}')"
                    forced[member] = ForcedDecision(
                        Rule.ACCURACY, detail, Origin.ACCURACY, label if member != label else None
                    )
        return forced

    def check(self, k: int) -> Candidate:
        """Prefix k, validated once (accuracy only: the load check waits until a prefix is chosen)."""
        if k not in self.results:
            search = self.search
            self.results[k] = search.validate(
                self.forced_for(self.ranked[:k]), search.feeds, search.reference, f"prefix {k}", load_check=False
            )
        return self.results[k]

    def smallest_passing(self, lo: int) -> int | None:
        """Shortest passing prefix above `lo` (known to fail): exponential steps, then bisection."""
        n = len(self.ranked)
        hi, step, k = None, 1, lo + 1
        while k < n:
            if self.check(k).passed:
                hi = k
                break
            lo, step = k, step * 2
            k = lo + step
        if hi is None:
            if n > lo and self.check(n).passed:
                hi = n
            else:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.check(mid).passed:
                hi = mid
            else:
                lo = mid
        return hi

    def run(self, notes: list[str]) -> tuple[Candidate, list[str]]:
        search = self.search
        lo = 0
        while True:
            hi = self.smallest_passing(lo)
            if hi is None:
                return self.all_float32(notes)
            # prefix hi - 1 fails and prefix hi passes: the unit ranked hi is the one that made it pass
            critical = self.group_of.get(self.ranked[hi - 1], {self.ranked[hi - 1]})
            chosen = search.loadable(self.results[hi], critical)
            if chosen is not None:
                return chosen, notes
            self.results[hi] = Candidate(self.results[hi].forced, False, ["failed to load"], self.results[hi].errors)
            lo = hi

    def all_float32(self, notes: list[str]) -> tuple[Candidate, list[str]]:
        search = self.search
        everything = self.forced_for(self.ranked)
        for label in search.model.labels:
            everything.setdefault(
                label, ForcedDecision(Rule.ACCURACY, "criteria not met with any float16 node", Origin.FALLBACK)
            )
        last = search.validate(everything, search.feeds, search.reference, "all float32", early_exit=False)
        notes.append(
            "no candidate met the criteria; returned the candidate with every node in float32"
            + (" (inputs/outputs are float16: try keep_io_types=True)" if not search.options.keep_io_types else "")
        )
        return last, notes


class Refinement:
    """Give back to float16 the forced nodes an accurate candidate did not need; least suspicious first.

    A prefix ranks above the critical node only by an error estimate, and a fusion unit moved as a whole may
    not need all its members. Whole chunks are tried first and split only when they fail (delta debugging):
    when most of them can go back, that costs a few tries, not one per node. With the emulated backend each
    try is a run of the one gated session, not a new session.
    """

    def __init__(self, search: MixedPrecisionSearch, best: Candidate, critical: set[str] | frozenset[str]) -> None:
        self.search = search
        self.best = best
        self.critical = critical
        self.forced = dict(best.forced)
        self.budget = search.settings.refine_budget

    def run(self) -> Candidate:
        search = self.search
        accuracy = [m for m, record in self.forced.items() if record.origin is Origin.ACCURACY]
        fused = [m for m, record in self.forced.items() if record.origin is Origin.FUSED]
        # Most expensive first, Casts counted (node_cost.give_back_order): the first chunks tried, and the halves
        # split off first when one fails, are where float16 gains most.
        fp32 = set(self.forced)
        ordered = give_back_order(list(reversed(accuracy)), search.costs, search.links, fp32)
        # The nodes forced before the critical unit (the last one the prefix search added: without it the
        # prefix failed) are the likeliest not needed: all of them first, in one try, then the critical unit.
        # enc1500 of bench/amp_speed.py: the cancellation ranked 7th behind six LayerNorm units, 1 try, not ~40.
        self.give_back([m for m in ordered if m not in self.critical])
        self.give_back([m for m in ordered if m in self.critical])
        self.give_back(give_back_order(list(reversed(fused)), search.costs, search.links, fp32))
        return self.best

    def give_back(self, members: list[str]) -> None:
        if not members or self.budget <= 0:
            return
        self.budget -= 1
        gone = set(members)
        trial = {m: v for m, v in self.forced.items() if m not in gone}
        label = members[0] if len(members) == 1 else f"{len(members)} nodes"
        search = self.search
        candidate = search.validate(trial, search.feeds, search.reference, f"refine -{label}", load_check=False)
        if candidate.passed:
            self.forced, self.best = trial, candidate
        elif len(members) > 1:
            half = len(members) // 2
            self.give_back(members[:half])
            self.give_back(members[half:])


__all__ = ["Candidate", "MixedPrecisionSearch", "SearchOutcome", "SearchSettings"]
