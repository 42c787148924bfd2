"""Fidelity of a candidate's outputs against the float32 reference: error statistics and pass/fail criteria.

Statistics are computed over all validation samples together per output, in float64, so one criterion means
the same thing whatever the batch split. A non-finite value where the reference is finite always fails: it is
the signature of float16 overflow. Where the float32 reference itself is NaN/±inf (a NaN in the data), the rule
is: the candidate must give the same kind of value there (NaN for NaN, the same infinity), and those elements
stay out of every statistic, so one bad input neither breaks the metrics nor is blamed on a candidate.
An output whose reference has no finite value at all cannot measure anything: `auto_mixed_precision` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from olive_fp16_pass.errors import OptionError

CRITERIA = ("rtol", "atol", "max_abs", "mean_abs", "p999_abs", "min_cosine", "min_psnr")
# Violations that hold on any superset of the samples: a validation may stop at the first feed that shows one.
LASTING = frozenset({"nonfinite", "allclose", "max_abs"})


@dataclass
class OutputError:
    max_abs: float
    mean_abs: float
    p999_abs: float
    cosine: float
    psnr: float
    allclose_violation: float  # largest |c - r| - (atol + rtol |r|); <= 0 means allclose holds
    nonfinite: int  # candidate values that are NaN/Inf where the reference is finite
    reference_nonfinite: int = 0  # reference values that are NaN/Inf (left out of the statistics)
    reference_mismatch: int = 0  # of those, candidate values of another kind (a number, or another infinity)

    def to_dict(self) -> dict:
        """JSON-safe: infinities and NaN become strings ("inf" for the PSNR of identical outputs)."""
        return {k: _finite_or_str(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _finite_or_str(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def abs_error_quantile(diff: np.ndarray, q: float) -> float:
    """numpy's (linear) quantile of absolute errors, without the NaN it reads when the errors hold +inf.

    `np.quantile` interpolates `a + (b - a) * t`: with both neighbours inf that is inf - inf = NaN, so an
    output with more than 0.1% overflowed values reported its 99.9th percentile as NaN, which compares false
    with every bound. Here a quantile whose neighbours reach inf is inf (inf also when only the upper one is
    and t > 0), and finite errors give exactly numpy's figure (its `_lerp`, from the two order statistics that
    np.partition finds: np.quantile's own first call imports numpy.ma, 20 ms of a small model's whole search).
    `diff` is |error| with NaN already counted as inf.
    """
    flat = np.asarray(diff, np.float64).ravel()
    if flat.size == 0:
        return 0.0
    position = (flat.size - 1) * q
    low = math.floor(position)
    high = min(low + 1, flat.size - 1)
    part = np.partition(flat, [low, high])
    a, b = float(part[low]), float(part[high])
    t = position - low
    if math.isinf(a) or (math.isinf(b) and t > 0):
        return math.inf
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def output_error(
    reference: list[np.ndarray], candidate: list[np.ndarray], rtol: float = 0.0, atol: float = 0.0
) -> OutputError:
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference]) if reference else np.zeros(0)
    cand = np.concatenate([np.asarray(c, np.float64).ravel() for c in candidate]) if candidate else np.zeros(0)
    if ref.shape != cand.shape:
        raise ValueError(f"output sizes differ: reference {ref.size} values, candidate {cand.size}")
    finite_ref = np.isfinite(ref)
    nonfinite = int(np.count_nonzero(finite_ref & ~np.isfinite(cand)))
    ref_bad = int(ref.size - np.count_nonzero(finite_ref))
    same_kind = (np.isnan(ref) & np.isnan(cand)) | (ref == cand)
    mismatch = int(np.count_nonzero(~finite_ref & ~same_kind))
    ref, cand = ref[finite_ref], cand[finite_ref]
    if ref.size == 0:
        return OutputError(0.0, 0.0, 0.0, 1.0, math.inf, -math.inf, 0, ref_bad, mismatch)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(cand - ref)
        diff = np.where(np.isnan(diff), np.inf, diff)
        max_abs = float(diff.max())
        mean_abs = float(diff.mean())
        p999 = abs_error_quantile(diff, 0.999)
        denom = float(np.linalg.norm(ref) * np.linalg.norm(cand))
        cosine = float(np.dot(ref, cand) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
        if not math.isfinite(cosine):
            cosine = -1.0
        mse = float(np.mean(diff**2))
        data_range = float(ref.max() - ref.min())
        if mse == 0:
            psnr = math.inf
        elif data_range > 0 and math.isfinite(mse):
            psnr = 10 * math.log10(data_range**2 / mse)
        else:
            psnr = -math.inf
        violation = float(np.max(diff - (atol + rtol * np.abs(ref))))
    return OutputError(max_abs, mean_abs, p999, cosine, psnr, violation, nonfinite, ref_bad, mismatch)


@dataclass
class Criteria:
    """What "accurate enough" means. Unset thresholds are not checked; per_output overrides by output name.

    rtol/atol: numpy allclose semantics per element (|c - r| <= atol + rtol |r|), as onnxconverter-common.
    max_abs, mean_abs, p999_abs: upper bounds on the absolute error. min_cosine, min_psnr: lower bounds.
    """

    rtol: float | None = None
    atol: float | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    p999_abs: float | None = None
    min_cosine: float | None = None
    min_psnr: float | None = None
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in CRITERIA:
            _check_criterion(name, getattr(self, name))
        if not isinstance(self.per_output, dict):
            raise OptionError(f"per_output: expected a dict of output name -> criteria, got {self.per_output!r}")
        for output, overrides in self.per_output.items():
            if not isinstance(overrides, dict):
                raise OptionError(f"per_output['{output}']: expected a dict of criteria, got {overrides!r}")
            unknown = set(overrides) - set(CRITERIA)
            if unknown:
                raise OptionError(
                    f"per_output['{output}']: unknown criteria {sorted(unknown)}; known: {', '.join(CRITERIA)}"
                )
            for name, value in overrides.items():
                _check_criterion(f"per_output['{output}']['{name}']", value, name)
        if not any(getattr(self, n) is not None for n in CRITERIA) and not self.per_output:
            raise OptionError(f"no accuracy criterion given: set at least one of {', '.join(CRITERIA)}")

    def for_output(self, name: str) -> dict[str, float]:
        merged = {n: getattr(self, n) for n in CRITERIA if getattr(self, n) is not None}
        merged.update(self.per_output.get(name, {}))
        return merged

    def check(self, errors: dict[str, OutputError]) -> list[str]:
        """The violated criteria, as readable strings; empty when every output passes."""
        return [message for _, message in self._violations(errors)]

    def lasting_failures(self, errors: dict[str, OutputError]) -> list[str]:
        """The violations that more samples cannot undo: NaN/Inf where float32 is finite, an element outside
        allclose, an error above max_abs (mean_abs, p999_abs, cosine and PSNR are statistics of all samples)."""
        return [message for kind, message in self._violations(errors) if kind in LASTING]

    def _violations(self, errors: dict[str, OutputError]) -> list[tuple[str, str]]:
        failures = []
        for name, error in errors.items():
            limits = self.for_output(name)
            if error.nonfinite:
                failures.append(("nonfinite", f"{name}: {error.nonfinite} NaN/Inf values where float32 is finite"))
            if error.reference_mismatch:
                failures.append(
                    ("nonfinite", f"{name}: {error.reference_mismatch} values differ in kind where float32 is NaN/Inf")
                )
            if ("rtol" in limits or "atol" in limits) and error.allclose_violation > 0:
                failures.append(
                    (
                        "allclose",
                        f"{name}: not allclose(rtol={limits.get('rtol', 0)}, atol={limits.get('atol', 0)}), "
                        f"max excess {error.allclose_violation:.3g}",
                    )
                )
            for key in ("max_abs", "mean_abs", "p999_abs"):
                if key in limits and not getattr(error, key) <= limits[key]:
                    failures.append((key, f"{name}: {key} {getattr(error, key):.4g} > {limits[key]:g}"))
            if "min_cosine" in limits and not error.cosine >= limits["min_cosine"]:
                failures.append(("min_cosine", f"{name}: cosine {error.cosine:.6f} < {limits['min_cosine']:g}"))
            if "min_psnr" in limits and not error.psnr >= limits["min_psnr"]:
                failures.append(("min_psnr", f"{name}: PSNR {error.psnr:.2f} dB < {limits['min_psnr']:g} dB"))
        return failures

    def tightened(self, fraction: float) -> Criteria:
        """The criteria allowing only `fraction` of each tolerance: upper bounds scaled, cosine's distance to 1
        scaled, PSNR raised by the same error ratio (-20 log10(fraction) dB). Float16-storage emulation only
        approximates GPU kernels; a candidate must pass with room to spare there."""
        if fraction == 1:
            return self

        def scale(name: str, value: float | None) -> float | None:
            if value is None:
                return None
            if name == "min_cosine":
                return 1 - (1 - value) * fraction
            if name == "min_psnr":
                return value - 20 * math.log10(fraction)
            return value * fraction

        per_output = {o: {k: scale(k, v) for k, v in d.items()} for o, d in self.per_output.items()}
        return Criteria(*(scale(n, getattr(self, n)) for n in CRITERIA), per_output)

    def usage(self, errors: dict[str, OutputError]) -> dict[str, dict[str, float | str]]:
        """Per output and criterion, the share of the tolerance the errors use (1.0: at the limit)."""
        shares: dict[str, dict[str, float | str]] = {}
        for name, error in errors.items():
            limits = self.for_output(name)
            row: dict[str, float] = {}
            for key in ("max_abs", "mean_abs", "p999_abs"):
                if key in limits:
                    value = getattr(error, key)
                    row[key] = value / limits[key] if limits[key] > 0 else (0.0 if value == 0 else math.inf)
            if "min_cosine" in limits:
                allowed = 1 - limits["min_cosine"]
                used = 1 - error.cosine
                row["min_cosine"] = used / allowed if allowed > 0 else (0.0 if used <= 0 else math.inf)
            if "min_psnr" in limits:
                row["min_psnr"] = 10 ** ((limits["min_psnr"] - error.psnr) / 20) if error.psnr != math.inf else 0.0
            if "rtol" in limits or "atol" in limits:
                row["allclose_excess"] = error.allclose_violation
            shares[name] = {k: _finite_or_str(round(v, 4)) for k, v in row.items()}
        return shares

    def to_dict(self) -> dict:
        data = {n: getattr(self, n) for n in CRITERIA if getattr(self, n) is not None}
        if self.per_output:
            data["per_output"] = self.per_output
        return data


def _check_criterion(option: str, value: object, kind: str | None = None) -> None:
    """A criterion is a finite number in its range, or None: NaN compares false with everything, so
    `rtol=nan` used to pass every candidate; a bound no output can meet would fail every one."""
    if value is None:
        return
    kind = kind or option
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(f"{option}: expected a finite number (or None to leave it out), got {value!r}")
    if kind == "min_cosine":
        if not -1 <= value <= 1:
            raise OptionError(f"{option}: a cosine similarity lies in [-1, 1], got {value!r}")
    elif value < 0:
        raise OptionError(f"{option}: expected a non-negative number, got {value!r}")


def compare_outputs(
    names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], criteria: Criteria
) -> dict[str, OutputError]:
    """Per-output errors; `reference[i][j]` is sample i, output j."""
    errors = {}
    for j, name in enumerate(names):
        limits = criteria.for_output(name)
        errors[name] = output_error(
            [r[j] for r in reference], [c[j] for c in candidate], limits.get("rtol", 0.0), limits.get("atol", 0.0)
        )
    return errors
