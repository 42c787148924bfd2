"""Which float16 nodes of a candidate add the most error: the order the mixed-precision search tries them in.

One emulated run of the candidate with every float tensor exposed, beside the float32 reference run of the
same feeds, gives each tensor's relative error. A node's score is the error it adds: its output's error minus
its inputs' (most error-adding first; two nodes whose tensors are both NaN/Inf add nothing between them).
Nodes whose float inputs are much larger than their output (x + c - c) cancel them: their accuracy depends on
the precision those inputs are stored in, not on their own arithmetic, so they move together with the
producers of those inputs (cancellation units).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from olive_fp16_pass.search_model import SearchModel

# A node whose inputs are this many times larger than its output cancels them (x + c - c): its accuracy
# depends on the precision its inputs are stored in.
CANCELLATION_RATIO = 8.0


@dataclass
class Ranking:
    """Main-graph float16 nodes, most error-adding first, each one's score, and the cancellation units."""

    order: list[str]
    scores: dict[str, float]
    cancellation: list[set[str]]


def _flat(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All arrays in one flat array, and their sizes."""
    sizes = np.array([np.size(a) for a in arrays], np.int64)
    flat = np.concatenate([np.ravel(a) for a in arrays]) if len(arrays) else np.zeros(0, np.float32)
    return flat, sizes


def _segment_means(flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The mean of each consecutive segment of `flat` (`sizes` long each; 0 for an empty one), in float64.

    One concatenation and one reduction per run instead of three numpy calls per tensor (a ranking of enc300 of
    bench/amp_speed.py reads 1,200 tensors)."""
    means = np.zeros(len(sizes), np.float64)
    present = sizes > 0
    if present.any():
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[present]
        means[present] = np.add.reduceat(np.asarray(flat, np.float64), starts) / sizes[present]
    return means


def magnitudes(samples: Sequence[Mapping[str, np.ndarray]], names: Iterable[str]) -> list[dict[str, float]]:
    """Per sample and tensor, the mean |value| of the float32 reference (0 for an empty tensor)."""
    names = list(names)
    out = []
    for sample in samples:
        flat, sizes = _flat([sample[name] for name in names])
        out.append(dict(zip(names, _segment_means(np.abs(flat), sizes).tolist(), strict=True)))
    return out


def relative_errors(
    reference: Sequence[Mapping[str, np.ndarray]],
    magnitude_per_sample: Sequence[Mapping[str, float]],
    runs: Sequence[Sequence[np.ndarray]],
    names: Sequence[str],
) -> dict[str, float]:
    """Per tensor, the sum over samples of mean |candidate - reference| / (mean |reference| + 1e-6); inf when
    the candidate's tensor is not finite where it matters."""
    error = np.zeros(len(names), np.float64)
    for ref, means, run in zip(reference, magnitude_per_sample, runs, strict=True):
        flat_r, sizes = _flat([ref[name] for name in names])
        flat_c, sizes_c = _flat(run)
        if not np.array_equal(sizes, sizes_c):
            raise ValueError("ranking: a candidate tensor's size differs from the reference's")
        with np.errstate(invalid="ignore", over="ignore"):
            difference = np.subtract(flat_c, flat_r, dtype=np.float64)  # in float64: as precise as converting first
            np.abs(difference, out=difference)
            e = _segment_means(difference, sizes) / (np.array([means[n] for n in names], np.float64) + 1e-6)
        error += np.where(np.isfinite(e), e, np.inf)
    return dict(zip(names, error.tolist(), strict=True))


def rank_nodes(
    model: SearchModel,
    error: Mapping[str, float],
    magnitude: Mapping[str, float],
    fp16_labels: set[str],
) -> Ranking:
    """Rank the main-graph nodes in `fp16_labels` by the error they add (see the module docstring)."""
    # A control-flow node is float32 at its interface but runs float16 bodies: forcing it forces them.
    fp16_labels = fp16_labels | {label for label, inner in model.bodies.items() if fp16_labels.intersection(inner)}
    scored = []
    producer: dict[str, str] = {}
    for position, (label, inputs, outputs) in enumerate(model.edges()):
        producer.update(dict.fromkeys(outputs, label))
        if label not in fp16_labels:
            continue
        e_out = max((error.get(o, 0.0) for o in outputs), default=0.0)
        e_in = max((error.get(i, 0.0) for i in inputs), default=0.0)
        local = 0.0 if (math.isinf(e_out) and math.isinf(e_in)) else e_out - e_in
        scored.append((-local, position, label))
    scored.sort()
    units = []
    for label, inputs, outputs in model.edges():
        if label not in fp16_labels:
            continue
        out = max((magnitude.get(o, 0.0) for o in outputs), default=0.0)
        big_inputs = {
            producer[i]
            for i in inputs
            if i in producer and i in magnitude and magnitude[i] > CANCELLATION_RATIO * out + 1e-12
        }
        if big_inputs:
            units.append({label, *(b for b in big_inputs if b in fp16_labels)})
    return Ranking([label for _, _, label in scored], {label: -negative for negative, _, label in scored}, units)


__all__ = ["CANCELLATION_RATIO", "Ranking", "magnitudes", "rank_nodes", "relative_errors"]
