"""`auto_mixed_precision`: keep in float32 only the nodes that accuracy on real data requires.

Compared with onnxconverter-common's `auto_convert_mixed_precision`, which bisects blindly over the node list
(about 2k·log2(N/k) conversions and sessions for k sensitive nodes) and validates on the CPU execution
provider (which hides float16 overflow), the search (precision_search.py) measures every tensor's range in one
float32 run, tries full float16 first, then keeps in float32 what the measured ranges require, then ranks the
remaining nodes by the error each adds and finds the shortest passing prefix of that ranking, and gives back
to float16 what was not needed; the result is checked on held-out data it never saw. This module checks the
options, loads the model and the feeds, runs the search and writes its report.

How a model flows: `auto_mixed_precision` (options, model, feeds) -> `search_model.SearchModel` (one analysed
onnx-ir copy) -> `precision_search.MixedPrecisionSearch.run()` (reference run, stages; candidates through
`candidate_runs`: the gated emulation of switchable.py, or real candidates on a provider) -> the chosen
candidate converted for real (`float16.convert_with_options`) -> `ConversionResult` with the search's report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from olive_fp16_pass import ir_serde
from olive_fp16_pass.compare import Criteria
from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.feeds import check_feeds
from olive_fp16_pass.float16 import ConversionResult, ModelLike
from olive_fp16_pass.model_io import has_external_data, load, load_model_file
from olive_fp16_pass.options import OPTION_NAMES, ConversionOptions
from olive_fp16_pass.precision_search import MixedPrecisionSearch, SearchOutcome, SearchSettings
from olive_fp16_pass.report import SearchReport
from olive_fp16_pass.runtime import choose_backend
from olive_fp16_pass.search_model import SearchModel

Feed = Mapping[str, np.ndarray]

# Under float16-storage emulation a candidate must pass within this fraction of each tolerance. Emulation rounds
# every float16 tensor where it is produced; GPU kernels round in other places too (fused attention, reduced
# precision accumulation), so a candidate at the very edge under emulation may fail there. 0.8 keeps 20% room;
# a choice, not yet measured against a GPU (bench/gpu_check.sh is where to measure it).
EMULATION_MARGIN = 0.8


class CriteriaNotMetError(Float16Error):
    """No candidate meets the accuracy criteria, not even with every node in float32."""


def _check_search_options(
    overflow_margin, holdout_fraction, refine_budget, strict, progress, provider, on_failure, emulation_margin
) -> None:
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
    if on_failure not in ("fp32", "raise"):
        raise Float16Error(f"on_failure: expected 'fp32' or 'raise', got {on_failure!r}")
    if not (number(emulation_margin) and 0 < emulation_margin <= 1):
        raise Float16Error(f"emulation_margin: expected a fraction in (0, 1], got {emulation_margin!r}")


def _split_feeds(data: Iterable[Feed], holdout_fraction: float) -> tuple[list[Feed], list[Feed]]:
    feeds = list(data)
    if not feeds:
        raise Float16Error("data: no validation samples given (need at least one input feed)")
    if not 0 <= holdout_fraction < 1:
        raise Float16Error(f"holdout_fraction: expected a number in [0, 1), got {holdout_fraction}")
    n_hold = 0 if len(feeds) < 2 or holdout_fraction == 0 else max(1, math.floor(len(feeds) * holdout_fraction))
    return feeds[: len(feeds) - n_hold], feeds[len(feeds) - n_hold :]


# The signature and docstring are most of its ~75 lines: the public keyword API, one line per option.
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
    given = {name: value for name, value in locals().items() if name in OPTION_NAMES}  # options.py declares them
    _check_search_options(
        overflow_margin, holdout_fraction, refine_budget, strict, progress, provider, on_failure, emulation_margin
    )
    base = ConversionOptions.from_mapping(given)
    criteria = Criteria(rtol, atol, max_abs, mean_abs, p999_abs, min_cosine, min_psnr, dict(per_output or {}))
    proto, base_dir, loaded = _load_source(model)
    unknown = sorted(set(criteria.per_output) - {o.name for o in proto.graph.output})
    if unknown:
        raise Float16Error(f"per_output: {unknown} are not outputs of the model")
    feeds, holdout = _split_feeds(data, holdout_fraction)
    check_feeds(proto, feeds + holdout)
    backend = choose_backend(provider, strict=strict)
    settings = SearchSettings(
        criteria,
        base,
        overflow_margin,
        refine_budget,
        emulation_margin,
        progress,
        source=str(model) if not isinstance(model, onnx.ModelProto) else "model",
    )
    search = MixedPrecisionSearch(SearchModel(proto, base_dir, loaded), feeds, holdout, backend, settings)
    outcome = search.run()
    final = outcome.final
    if not final.passed and on_failure == "raise":
        raise CriteriaNotMetError(
            "no candidate meets the accuracy criteria, not even with every node in float32: "
            + "; ".join(final.failures[:3])
        )
    result = outcome.result
    result.external_data = base_dir is not None  # saved like the input: weights in a data file
    _write_report(search, outcome, time.perf_counter() - start)
    return result


def _load_source(model: ModelLike) -> tuple[onnx.ModelProto, Path | None, ir.Model]:
    """The model as a ModelProto, the folder of its external data (None: it holds all its data), and the onnx-ir
    copy loading made of it (the search analyses that one)."""
    if isinstance(model, onnx.ModelProto):
        if has_external_data(model):
            raise Float16Error(
                "model: this ModelProto keeps its weights in external files and has no folder to find them in; "
                "pass the model's path instead (or load it with onnx.load(path) to bring the data in memory)"
            )
        loaded = load(model)  # the checks and repairs of the path route (a cycle is refused, issue 14.2)
        return loaded.proto, None, loaded.model
    # Lazily loaded: external tensors stay in their files (memory-mapped when read), so the search costs about
    # the model's size in memory, and the serialized proto only references them.
    ir_model, external = load_model_file(model)
    proto = ir_serde.serialize_model(ir_model)
    return proto, Path(model).resolve().parent if external else None, ir_model


def _write_report(search: MixedPrecisionSearch, outcome: SearchOutcome, seconds: float) -> None:
    """The search's part of the result's report: notes, sentinels, costs, warnings and the SearchReport."""
    final, holdout = outcome.final, outcome.holdout
    holdout_errors = holdout.errors if holdout is not None else None
    holdout_failures = holdout.failures if holdout is not None else []
    report = outcome.result.report
    report.notes.extend(outcome.notes)
    sentinels = search.note_sentinels(report)
    report.cost = search.cost_summary(report)
    if holdout_failures and final.passed:
        report.warnings.append(
            "criteria met on validation data but not on held-out data: " + "; ".join(holdout_failures[:3])
        )
    criteria, backend = search.settings.criteria, search.backend
    report.search = SearchReport(
        backend=backend.to_dict(),
        providers_used=sorted(search.sessions.providers_seen),
        criteria=criteria.to_dict(),
        emulation_margin=search.settings.emulation_margin if backend.emulated else None,
        criteria_applied=search.criteria.to_dict(),
        tolerance_used=criteria.usage(final.errors or {}),
        holdout_tolerance_used=criteria.usage(holdout_errors or {}),
        criteria_met=final.passed,
        holdout_met=(not holdout_failures) if holdout is not None else None,
        validation_samples=len(search.feeds),
        holdout_samples=len(search.holdout),
        candidates_tried=search.tried,
        sessions_created=search.sessions.created,
        seconds=round(seconds, 3),
        validation_errors={k: v.to_dict() for k, v in (final.errors or {}).items()},
        holdout_errors={k: v.to_dict() for k, v in (holdout_errors or {}).items()},
        failures=final.failures,
        cost=report.cost,
        sentinels=sentinels,
        history=search.history,
    )
    report.seconds = seconds


__all__ = ["CriteriaNotMetError", "auto_mixed_precision", "check_feeds"]
