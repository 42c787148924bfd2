"""The conversion report: per-node precision decisions with reasons, counts, notes. JSON via to_dict()."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from olive_fp16_pass.precision_plan import NodeDecision, Precision


@dataclass(eq=False)
class SearchReport(Mapping):
    """What `auto_mixed_precision`'s search did and measured, beside the per-node decisions.

    Read it by attribute (`report.search.criteria_met`); it is also a read-only mapping with the same keys
    (`report.search["criteria_met"]`), which is its JSON form (`to_dict()`), so code written against the
    dict it used to be keeps working."""

    backend: dict[str, Any]  # mode ("provider" or "emulation"), provider, why
    providers_used: list[str]
    criteria: dict[str, Any]  # as the user gave them
    emulation_margin: float | None  # under emulation: the fraction of each tolerance a candidate may use
    criteria_applied: dict[str, Any]  # after the margin
    tolerance_used: dict[str, Any]  # share of each tolerance the result uses, validation data (1.0: at the limit)
    holdout_tolerance_used: dict[str, Any]
    criteria_met: bool
    holdout_met: bool | None  # None: no held-out feeds
    validation_samples: int
    holdout_samples: int
    candidates_tried: int
    sessions_created: int
    seconds: float
    validation_errors: dict[str, Any]
    holdout_errors: dict[str, Any]
    failures: list[str]
    cost: dict[str, Any] | None  # float16 share by nodes and by estimated FLOPs, Casts (node_cost.py)
    sentinels: list[dict[str, Any]]  # tensors beyond float16's range whose values only mask (sentinels.py)
    history: list[dict[str, Any]]  # every candidate validated, in order: stage, counts, passed, failures

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str) -> Any:
        if key not in _SEARCH_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_SEARCH_KEYS)

    def __len__(self) -> int:
        return len(_SEARCH_KEYS)


_SEARCH_KEYS = tuple(f.name for f in fields(SearchReport))


@dataclass
class ConversionReport:
    decisions: list[NodeDecision] = field(default_factory=list)
    casts_inserted: int = 0
    initializers_converted: int = 0
    constants_converted: int = 0
    values_retyped: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    search: SearchReport | None = None  # set by auto_mixed_precision: backend, candidates, sessions, errors
    calibration: dict[str, Any] | None = None  # set by calibrated Float16: samples, tensors measured, margin
    # Ops the target provider has no kernel for at all (cuda_kernels.cpu_fallback_risks): they leave the GPU.
    cpu_fallback_risks: list[dict[str, Any]] = field(default_factory=list)
    # Float16 share by nodes and by estimated FLOPs, bytes, Casts (node_cost.py); set by auto_mixed_precision,
    # whose reference run saw the shapes.
    cost: dict[str, Any] | None = None

    @property
    def fp32_nodes(self) -> list[NodeDecision]:
        return [d for d in self.decisions if d.precision is Precision.FP32]

    @property
    def fp16_nodes(self) -> list[NodeDecision]:
        return [d for d in self.decisions if d.precision is Precision.FP16]

    def fp16_nodes_pct(self) -> float | None:
        decided = len(self.decisions)
        return round(100.0 * len(self.fp16_nodes) / decided, 2) if decided else None

    def reasons(self) -> dict[str, int]:
        return dict(Counter(d.rule.value for d in self.fp32_nodes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {
                "nodes_fp16": len(self.fp16_nodes),
                "nodes_fp32": len(self.fp32_nodes),
                "fp32_reasons": self.reasons(),
                "casts_inserted": self.casts_inserted,
                "initializers_converted": self.initializers_converted,
                "constants_converted": self.constants_converted,
                "values_retyped": self.values_retyped,
                "fp16_nodes_pct": self.fp16_nodes_pct(),
                "fp16_flops_pct": self.cost.get("fp16_flops_pct") if self.cost else None,
                "seconds": round(self.seconds, 4),
            },
            **({"cost": self.cost} if self.cost is not None else {}),
            "options": self.options,
            "notes": self.notes,
            "warnings": self.warnings,
            "fp32_nodes": [d.to_dict() for d in self.fp32_nodes],
            "fp16_nodes_with_notes": [d.to_dict() for d in self.fp16_nodes if d.detail],
            "cpu_fallback_risks": self.cpu_fallback_risks,
            **({"search": self.search.to_dict()} if self.search is not None else {}),
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        share = self.fp16_nodes_pct()
        flops = self.cost.get("fp16_flops_pct") if self.cost else None
        shares = (
            ""
            if share is None
            else f" ({share:g}% of nodes" + (f", {flops:g}% of estimated FLOPs)" if flops is not None else ")")
        )
        lines = [
            f"{len(self.fp16_nodes)} nodes in float16{shares}, {len(self.fp32_nodes)} kept in float32, "
            f"{self.casts_inserted} Casts inserted ({self.seconds:.2f} s)"
        ]
        for rule, count in sorted(self.reasons().items()):
            lines.append(f"  float32 because {rule}: {count}")
        if self.search is not None:
            s = self.search
            lines.append(
                f"  search: {s.candidates_tried} candidates, {s.sessions_created} sessions, "
                f"{s.seconds:.1f} s, validated by {s.backend['mode']} ({s.backend['provider']}); "
                f"criteria met: validation {s.criteria_met}, held-out {s.holdout_met}"
            )
        if self.calibration is not None:
            c = self.calibration
            lines.append(
                f"  calibration: {c['samples']} feeds, {c['tensors_measured']} tensors measured in one float32 run, "
                f"{c['nodes_fp32']} nodes kept in float32 for their range (margin {c['overflow_margin']:g})"
            )
        lines.extend(f"  CUDA EP: {r['detail']} ({r['nodes']} nodes)" for r in self.cpu_fallback_risks)
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)
