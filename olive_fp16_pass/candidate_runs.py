"""How the mixed-precision search runs a candidate: built for real, or emulated in its one gated session.

A candidate is a set of forced decisions (label -> ForcedDecision) laid over the static rules. Two validators
answer the same three questions about it (its outputs on some feeds, its per-node decisions, whether the real
model loads with ONNX Runtime's optimizations on):
- `GatedValidator`: float16 storage emulated on the CPU in the one gated session (switchable.py); a passing
  candidate is then built for real once and loaded with every optimization (fusions included), since the
  emulation cannot see them;
- `ProviderValidator`: the real candidate converted and run on the target execution provider (a GPU that
  really works here); its sessions load it with every optimization, so it needs no separate load check.
The ranking always reads the gated emulation (`GatedEmulator`), whatever validates: it needs every tensor of
a float16 candidate, which a real float16 model on a provider does not expose without extra Casts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from olive_fp16_pass.classify import ClassifyResult
from olive_fp16_pass.float16 import ConversionResult, convert_with_options
from olive_fp16_pass.model_io import LoadedModel, release_external, save_model
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import ForcedDecision, NodeDecision
from olive_fp16_pass.runtime import SessionFactory, run_session, tensor_view
from olive_fp16_pass.search_model import SearchModel
from olive_fp16_pass.switchable import SwitchableEmulation

Feed = Mapping[str, np.ndarray]
Forced = Mapping[str, ForcedDecision]

# Below this many estimated FLOPs per run (node_cost.py) the gated session runs on one thread: its runs last
# a fraction of a millisecond per node, and handing each node to a thread pool cost more than the work (enc300
# of bench/amp_speed.py, 2 shared cores: 25-40% of the search time). Bigger models keep onnxruntime's default.
SMALL_MODEL_FLOPS = 5e7


def as_float32(value) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


class CandidateBuilder:
    """Converts candidates for real; the last one is kept, so that the load check, the held-out check and the
    result share one conversion."""

    def __init__(self, model: SearchModel, options: ConversionOptions) -> None:
        self.model = model
        self.options = options
        self._key: frozenset | None = None
        self._built: ConversionResult | None = None

    def build(self, forced: Forced) -> ConversionResult:
        forced = self.model.with_bodies(forced)
        key = frozenset(forced.items())  # the records, not only the labels: a label forced float16 or float32
        if self._key == key and self._built is not None:
            return self._built
        model = self.model
        # check_runtime=False: the search's own sessions (and its load check) prove onnxruntime loads it.
        if model.base_dir is None and not model.big:
            # Written as protobuf from the source proto and its analysed copy, which the conversion only reads,
            # with the classification the gated emulation made of this candidate: no copy deserialized, no rule
            # run again, no serialization (enc300 of bench/amp_speed.py: 22 ms a candidate built from a fresh
            # onnx-ir copy, 8 ms so, and the load check no longer serializes it).
            analysed = LoadedModel(model.ir, model.proto, external=False, analysis=(model.index, model.types))
            result = convert_with_options(
                model.proto,
                self.options,
                forced=forced,
                check_runtime=False,
                loaded=analysed,
                classified=model.classified(self.options, forced),
            )
        else:  # external data, or big: converted in place on a fresh onnx-ir copy
            result = convert_with_options(model.fresh_ir(), self.options, forced=forced, check_runtime=False)
            release_external(result.ir_model)
        self._key, self._built = key, result
        return result


class GatedEmulator:
    """The gated emulation model of the search's model and its one session: runs any candidate.

    The gates of the last candidate stay bound: a validation that runs its first feed, then the others,
    computes and binds them once."""

    def __init__(self, model: SearchModel, sessions: SessionFactory, options: ConversionOptions, flops: float) -> None:
        self.model = model
        self.sessions = sessions
        self.options = options
        self.switchable = SwitchableEmulation(model, expose=model.float_names, round_at_use=model.big)
        self.threads = 1 if flops < SMALL_MODEL_FLOPS else None
        self.session = None
        self._bound_key: frozenset | None = None  # the candidate whose gates are bound on `_binding`
        self._binding = None  # the session's I/O binding: reset with the session
        self._gates: np.ndarray | None = None
        self._typed_key: int | None = None
        self._typed: list[dict] = []

    def classified(self, forced: Forced) -> ClassifyResult:
        return self.switchable.classify(self.options, self.model.with_bodies(forced))

    def close(self) -> None:
        """Drop the session (a big model's load check needs its memory); the next run opens it again."""
        self.session = None
        self._bound_key = None
        self._binding = None

    def run(
        self, forced: Forced, feeds: list[Feed], names: list[str], select: slice = slice(None)
    ) -> tuple[list[list[np.ndarray]], ClassifyResult]:
        """Runs of the candidate `forced` on `feeds[select]` (outputs `names`), and its classification."""
        forced = self.model.with_bodies(forced)
        if self.session is None:
            self.session = self.sessions.session(self.switchable.model, emulation=True, threads=self.threads)
        typed = self._typed_feeds(feeds)[select]
        if any(not isinstance(v, np.ndarray) or v.dtype.kind in "OSU" for feed in typed for v in feed.values()):
            # Strings (a scikit-learn pipeline's text or category column), maps: I/O binding refuses them.
            gates, classified = self.switchable.gates(self.options, forced)
            gate_feed = self.switchable.gate_feed(gates)
            runs = [[tensor_view(o) for o in self.session.run(names, {**gate_feed, **feed})] for feed in typed]
            return runs, classified
        # I/O binding: session.run() validates every input name in Python, 38 ms a run with the thousands of
        # gate inputs of a 1,500-node encoder, twice the run itself (bench/amp_speed.py).
        key = frozenset(forced.items())
        if self._bound_key != key:
            gates, classified = self.switchable.gates(self.options, forced)
            self._bind_gates(gates)
            self._bound_key, self._classified = key, classified
        binding, classified = self._binding, self._classified
        runs = []
        for feed in typed:
            for name, value in feed.items():
                binding.bind_cpu_input(name, value)
            for name in names:
                binding.bind_output(name)
            self.session.run_with_iobinding(binding)
            runs.append([tensor_view(o) for o in binding.copy_outputs_to_cpu()])
            binding.clear_binding_outputs()
        return runs, classified

    def _bind_gates(self, gates: np.ndarray) -> None:
        """Bind the gates of a candidate; on the session's binding, only those that differ from the last
        candidate's (two candidates differ in a few gates of thousands: binding all of them was 0.3 s of a
        2 s search on enc1500 of bench/amp_speed.py)."""
        if self._binding is None:  # a new session (close() drops the binding with it)
            self._binding = self.session.io_binding()
            changed = range(len(gates))
        else:
            changed = np.flatnonzero(gates != self._gates).tolist()
        for name, value in self.switchable.gate_values(gates, changed):
            self._binding.bind_cpu_input(name, value)
        self._gates = gates

    def _typed_feeds(self, feeds: list[Feed]) -> list[dict]:
        """Feeds as arrays once per list, float32 where the input is float32 (the gated model's inputs are the
        float32 model's); other inputs keep their dtype (a float64 model takes float64)."""
        if self._typed_key != id(feeds):
            inputs = self.model.proto.graph.input
            float32 = {i.name for i in inputs if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
            tensors = {i.name for i in inputs if i.type.WhichOneof("value") == "tensor_type"}
            self._typed = [
                {
                    k: np.asarray(v, np.float32) if k in float32 else np.asarray(v) if k in tensors else v
                    for k, v in feed.items()
                }
                for feed in feeds
            ]
            self._typed_key = id(feeds)
        return self._typed


class Validator(Protocol):
    """What the search asks of a candidate, whichever way it is run."""

    emulated: bool

    def run(
        self, forced: Forced, feeds: list[Feed], select: slice
    ) -> tuple[list[list[np.ndarray]], Iterable[NodeDecision]]:
        """The model outputs of `feeds[select]` (float outputs as float32), and the candidate's decisions."""
        ...

    def decisions(self, forced: Forced) -> Iterable[NodeDecision]: ...

    def load_problems(self, forced: Forced, feed: Feed, reference: Mapping[str, np.ndarray]) -> list[str]:
        """Why the real candidate fails to load or run with every optimization on ([]: it loads)."""
        ...


class GatedValidator:
    """Validates in the gated emulation; a candidate's real model is loaded only when asked (load_problems)."""

    emulated = True

    def __init__(self, emulator: GatedEmulator, builder: CandidateBuilder, sessions: SessionFactory) -> None:
        self.emulator = emulator
        self.builder = builder
        self.sessions = sessions
        self.outputs = emulator.model.output_names

    def run(self, forced: Forced, feeds: list[Feed], select: slice):
        runs, classified = self.emulator.run(forced, feeds, self.outputs, select)
        return [[as_float32(o) for o in run] for run in runs], classified.plan.decisions.values()

    def decisions(self, forced: Forced) -> Iterable[NodeDecision]:
        return self.emulator.classified(forced).plan.decisions.values()

    def load_problems(self, forced: Forced, feed: Feed, reference: Mapping[str, np.ndarray]) -> list[str]:
        """The real mixed model must load and run with ORT's optimizations on (the CPU provider here), and stay
        finite where float32 is."""
        if self.emulator.model.big:
            # the gated session's mapped weights would add the model's size again to the candidate's own:
            # closed before the candidate is converted (reopened, cheaply, when needed)
            self.emulator.close()
        built = self.builder.build(forced)
        try:
            if self.emulator.model.big:
                outputs = self._run_from_file(built.ir_model, feed)
            else:
                # one feed, on the gated session's thread choice (a small model runs faster on one thread: a gated
                # run of enc300, idle 2-core machine, 1.41 ms vs 1.63 ms); creating the session costs the same
                # either way on an idle machine, and which optimizations run, fusions included, does not depend
                # on it
                session = self.sessions.session(
                    built.held_form(), emulation=False, threads=self.emulator.threads, prepack=False
                )
                outputs = run_session(session, feed)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            return [f"candidate failed to load or run: {type(exc).__name__}: {str(exc)[:300]}"]
        bad = [
            name
            for name, output in zip(self.outputs, outputs, strict=True)
            if np.issubdtype(np.asarray(output).dtype, np.floating)
            and not np.isfinite(np.asarray(output)).all()
            and np.isfinite(reference[name]).all()
        ]
        return [f"{name}: NaN/Inf in the real float16 model on ORT" for name in bad]

    def _run_from_file(self, model, feed: Feed) -> list[np.ndarray]:
        """A big candidate runs from a temporary file: onnxruntime memory-maps its data instead of copying
        weights handed over in memory (measured twice their size)."""
        with tempfile.TemporaryDirectory(prefix="olive_fp16_candidate_") as folder:
            path = save_model(model, Path(folder) / "candidate.onnx", external_data=True)
            session = self.sessions.session(str(path), emulation=False)
            outputs = run_session(session, feed)
            del session
        return outputs


class ProviderValidator:
    """Validates the real candidate on the target provider; its sessions already load it with every
    optimization on, so a candidate that ran there loads."""

    emulated = False

    def __init__(self, builder: CandidateBuilder, sessions: SessionFactory) -> None:
        self.builder = builder
        self.sessions = sessions
        self._session: tuple[ConversionResult, object] | None = None  # (the built candidate, its session)

    def run(self, forced: Forced, feeds: list[Feed], select: slice):
        built = self.builder.build(forced)
        if self._session is None or self._session[0] is not built:  # the first feed, then the others: one session
            self._session = (built, self.sessions.session(built.held_form(), emulation=False))
        session = self._session[1]
        outputs = [[as_float32(o) for o in run_session(session, feed)] for feed in feeds[select]]
        return outputs, built.report.decisions

    def decisions(self, forced: Forced) -> Iterable[NodeDecision]:
        return self.builder.build(forced).report.decisions

    def load_problems(self, forced: Forced, feed: Feed, reference: Mapping[str, np.ndarray]) -> list[str]:
        return []


__all__ = [
    "SMALL_MODEL_FLOPS",
    "CandidateBuilder",
    "GatedEmulator",
    "GatedValidator",
    "ProviderValidator",
    "Validator",
    "as_float32",
]
