"""After `olive run`: one report a person can read and a pipeline can parse, plus before/after pictures.

Reads what Olive leaves in `output_dir` (footprint.json with every candidate's metrics and whether it met the
goals, model.onnx of the chosen one) and what our evaluator wrote beside each candidate (`*.eval.json`: the
providers each session really used, every figure). Writes `report.json`, `report.md` and `comparison.png`
(labelled: noisy | FP32 | chosen | difference x50, a zoomed row, the goal figures) and exits non-zero
when no candidate met the goals, which Olive 0.13
itself does not do ("No output model produced", exit code 0).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EXIT_OK = 0
EXIT_NO_CANDIDATE = 1
EXIT_BAD_INPUT = 2
# Version of report.json's layout, described by olive_fp16_pass/schemas/run_report.schema.json: the minor number
# grows when fields are added, the major number when a field a pipeline may read changes or goes away.
SCHEMA_VERSION = "1.0"

PASS_NAMES = {
    "onnxfloat16": "OnnxFloat16 (olive-fp16)",
    "onnxautomixedprecision": "OnnxAutoMixedPrecision (olive-fp16)",
    "onnxfloattofloat16": "OnnxFloatToFloat16 (Olive)",
    "onnxiodatatypeconverter": "OnnxIODataTypeConverter (Olive)",
    "onnxconversion": "OnnxConversion (Olive)",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_path(node: dict) -> Path | None:
    config = (node.get("model_config_data") or {}).get("config") or {}
    path = config.get("model_path")
    if not path:
        return None
    path = Path(path)
    if path.is_dir() and config.get("onnx_file_name"):
        path = path / config["onnx_file_name"]
    return path


def _chain(footprint: dict, model_id: str) -> list[str]:
    names = []
    node = footprint.get(model_id)
    while node and node.get("from_pass"):
        names.append(PASS_NAMES.get(node["from_pass"], node["from_pass"]))
        node = footprint.get(node.get("parent_model_id"))
    return list(reversed(names))


def _metrics(node: dict) -> dict[str, float]:
    values = ((node.get("metrics") or {}).get("value")) or {}
    return {key.split("-", 1)[-1]: entry["value"] for key, entry in values.items()}


def _precision_report(footprint: dict, model_id: str) -> dict | None:
    """The olive-fp16 report of the precision pass in this candidate's chain, if one of ours made it."""
    node = footprint.get(model_id)
    while node:
        attributes = ((node.get("model_config_data") or {}).get("config") or {}).get("model_attributes") or {}
        if "olive_fp16_report" in attributes:
            report = attributes["olive_fp16_report"]
            return {"summary": report["summary"], "fp32_nodes": report["fp32_nodes"], "search": report.get("search")}
        node = footprint.get(node.get("parent_model_id"))
    return None


def _find_olive_config(footprint: dict) -> dict:
    """The run's config as Olive cached it (`<cache_dir>/<workflow_id>/olive_config.json`), found from the
    candidates' paths in the cache; {} when not found (the report then says what it could not know)."""
    for node in footprint.values():
        path = _model_path(node)
        for parent in list(path.parents)[:8] if path else []:
            candidate = parent / "olive_config.json"
            if candidate.is_file():
                try:
                    return json.loads(candidate.read_text())
                except json.JSONDecodeError:
                    return {}
    return {}


def _metric_columns(footprint: dict, olive_config: dict) -> list[dict]:
    """One column per sub-metric the workflow really measured: key, label, priority, higher_is_better, kind."""
    kinds = {m.get("name"): m.get("type") for m in _evaluator_metrics(olive_config)}
    columns: dict[str, dict] = {}
    for node in footprint.values():
        for key, entry in (((node.get("metrics") or {}).get("value")) or {}).items():
            metric, _, sub = key.partition("-")
            kind = kinds.get(metric) or ("custom" if "_" in sub else metric)
            short = sub or key
            label = (
                short if kind == "custom" else f"{metric} {short} (ms)" if kind == "latency" else f"{metric} {short}"
            )
            columns.setdefault(
                key,
                {
                    "key": key,
                    "short": short,
                    "label": label,
                    "priority": entry.get("priority", -1),
                    "higher_is_better": entry.get("higher_is_better"),
                    "kind": kind,
                },
            )
    ranked = sorted((c for c in columns.values() if c["priority"] > 0), key=lambda c: c["priority"])
    return ranked + [c for c in columns.values() if c["priority"] <= 0]


def _evaluator_metrics(olive_config: dict) -> list[dict]:
    evaluator = (olive_config.get("engine") or {}).get("evaluator")
    if isinstance(evaluator, str):
        evaluator = (olive_config.get("evaluators") or {}).get(evaluator)
    return list((evaluator or {}).get("metrics") or [])


def resolve_goals(olive_config: dict, baseline: dict[str, float] | None) -> dict[str, dict]:
    """Each goal of the workflow and the threshold Olive really applied (max-degradation: baseline +/- value)."""
    goals = {}
    for metric in _evaluator_metrics(olive_config):
        for sub in metric.get("sub_types") or []:
            goal = sub.get("goal")
            if not goal:
                continue
            key = f"{metric['name']}-{sub['name']}"
            sign = 1 if sub.get("higher_is_better") else -1
            base = (baseline or {}).get(sub["name"])
            value = goal["value"]
            if goal["type"] == "threshold":
                threshold = value
            elif goal["type"] == "max-degradation" and base is not None:
                threshold = base - sign * value
            elif goal["type"] == "min-improvement" and base is not None:
                threshold = base + sign * value
            elif goal["type"] == "percent-max-degradation" and base is not None:
                threshold = base * (1 - sign * value / 100)
            elif goal["type"] == "percent-min-improvement" and base is not None:
                threshold = base * (1 + sign * value / 100)
            else:
                threshold = None
            goals[key] = {
                "type": goal["type"],
                "value": value,
                "baseline": base,
                "threshold": threshold,
                "op": ">=" if sub.get("higher_is_better") else "<=",
                "short": sub["name"],
            }
    return goals


def _target(olive_config: dict) -> tuple[str | None, list[str]]:
    """(device, execution providers) of the workflow's target system, as Olive ran it."""
    target = (olive_config.get("engine") or {}).get("target")
    systems = olive_config.get("systems") or {}
    system = systems.get(target) if isinstance(target, str) else target
    if not system and len(systems) == 1:
        system = next(iter(systems.values()))
    accelerators = ((system or {}).get("config") or {}).get("accelerators") or []
    if not accelerators:
        return None, []
    return accelerators[0].get("device"), list(accelerators[0].get("execution_providers") or [])


def _device_label(device: str | None, providers: list[str]) -> str:
    if providers and providers[0] in ("CUDAExecutionProvider", "torch-cuda"):
        return "GPU (CUDA)"
    if providers and providers[0] in ("CPUExecutionProvider", "torch-cpu"):
        return "CPU"
    return {"cpu": "CPU", "gpu": "GPU"}.get(device or "", providers[0] if providers else "unknown")


def _speed(columns: list[dict]) -> tuple[dict | None, dict | None, dict | None]:
    """The latency column Olive ranks by (lowest positive priority among latency columns) and its spread
    columns (min, 90th percentile) where the workflow measured them."""
    latency = [c for c in columns if c["kind"] == "latency" or "latency" in c["short"]]
    ranked = [c for c in latency if c["priority"] > 0] or latency
    if not ranked:
        return None, None, None
    main = ranked[0]
    metric = main["key"].partition("-")[0]
    siblings = {c["short"]: c for c in latency if c["key"].partition("-")[0] == metric}
    low = siblings.get("min") or siblings.get("latency_min_ms")
    high = siblings.get("p90") or siblings.get("latency_p90_ms")
    return main, low, high


def _band(metrics: dict[str, float], main: dict, low: dict | None, high: dict | None) -> tuple[float, float] | None:
    if low is None or high is None or low["short"] not in metrics or high["short"] not in metrics:
        return None
    return metrics[low["short"]], metrics[high["short"]]


def compare_latency(candidate: dict[str, float], baseline: dict[str, float], speed: tuple) -> dict | None:
    """Candidate vs baseline latency: ratio of medians and whether the difference is beyond the noise (their
    min..p90 bands do not overlap). Without a measured spread, no claim of faster or slower beyond the medians."""
    main = speed[0]
    if main is None or main["short"] not in candidate or main["short"] not in baseline:
        return None
    ours, theirs = candidate[main["short"]], baseline[main["short"]]
    a, b = _band(candidate, *speed), _band(baseline, *speed)
    beyond = None if a is None or b is None else (a[1] < b[0] or b[1] < a[0])
    return {"candidate": ours, "baseline": theirs, "ratio": ours / theirs if theirs else None, "beyond_noise": beyond}


def speed_words(cmp: dict) -> str:
    ratio = cmp["ratio"]
    if ratio is None:
        return "-"
    if cmp["beyond_noise"] is False:
        return f"x{ratio:.2f} (within noise)"
    word = "slower" if ratio > 1 else "faster"
    return f"x{ratio:.2f} ({word}{'' if cmp['beyond_noise'] else ', spread not measured'})"


class MalformedFootprint(ValueError):
    """footprint.json exists but is not what Olive writes: said in one line, never as a traceback."""


def build_report(output_dir: Path) -> dict[str, Any]:
    footprint_path = output_dir / "footprint.json"
    if not footprint_path.is_file():
        raise FileNotFoundError(f"{footprint_path}: not found; is {output_dir} the output_dir of an `olive run`?")
    try:
        footprint = json.loads(footprint_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedFootprint(f"{footprint_path}: not JSON ({exc})") from exc
    if not isinstance(footprint, dict) or not all(isinstance(node, dict) for node in footprint.values()):
        raise MalformedFootprint(f"{footprint_path}: not what Olive writes (an object of model id -> model record)")
    olive_config = _find_olive_config(footprint)
    columns = _metric_columns(footprint, olive_config)
    speed = _speed(columns)
    device, target_providers = _target(olive_config)
    chosen_file = output_dir / "model.onnx"
    chosen_hash = _sha256(chosen_file) if chosen_file.is_file() else None
    input_id = next((k for k, v in footprint.items() if not v.get("parent_model_id")), None)
    input_metrics = _metrics(footprint[input_id]) if input_id and footprint[input_id].get("metrics") else None
    goals = resolve_goals(olive_config, input_metrics)
    candidates = []
    chosen_id = None
    for model_id, node in footprint.items():
        if model_id == input_id or not node.get("metrics"):
            continue
        path = _model_path(node)
        sidecar_path = path.with_suffix(".eval.json") if path else None
        sidecar = json.loads(sidecar_path.read_text()) if sidecar_path and sidecar_path.is_file() else {}
        same_file = bool(chosen_hash and path and path.is_file() and _sha256(path) == chosen_hash)
        # Two candidates can produce identical files (AMP that needed no float32 node = full FP16): Olive's
        # pick is the one it marked on the Pareto front.
        if same_file and (chosen_id is None or node.get("is_pareto_frontier")):
            chosen_id = model_id
        providers = sidecar.get("providers_used")
        metrics = _metrics(node)
        eval_outputs = path.with_suffix(".eval.npz") if path else None
        candidates.append(
            {
                "id": model_id,
                "passes": _chain(footprint, model_id),
                "metrics": metrics,
                "goals_met": bool(node["metrics"].get("if_goals_met")),
                "pareto_front": bool(node.get("is_pareto_frontier")),
                "providers_used": providers or target_providers or None,
                "providers_source": "evaluator sessions" if providers else "workflow target (Olive's own metric)",
                "device_label": sidecar.get("device_label") or _device_label(device, target_providers),
                "accuracy_backend": sidecar.get("accuracy_backend"),
                "model_path": str(path) if path else None,
                "eval_outputs": str(eval_outputs) if eval_outputs and eval_outputs.is_file() else None,
                "precision": _precision_report(footprint, model_id),
                "latency_vs_input": compare_latency(metrics, input_metrics, speed) if input_metrics else None,
            }
        )
    chosen = next((c for c in candidates if c["id"] == chosen_id), None)
    labels = sorted({c["device_label"] for c in candidates}) or (
        [_device_label(device, target_providers)] if olive_config else []
    )
    ranked_by = speed[0]["label"] if speed[0] else (columns[0]["label"] if columns else "the first metric")
    if goals:
        rule = f"best {ranked_by} (priority 1) among the candidates meeting every goal"
    else:
        rule = f"best {ranked_by} (priority 1); the workflow sets no goals, so accuracy was not a condition"
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok" if chosen else "no_candidate_met_goals",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "output_dir": str(output_dir),
        "device_labels": labels,
        "target_providers": target_providers,
        "chosen": chosen,
        "input_model_metrics": input_metrics,
        # PyTorchModel: the FP32 row was measured in PyTorch (our evaluator's TorchRunner), not in onnxruntime
        "input_model_type": (olive_config.get("input_model") or {}).get("type"),
        "columns": columns,
        "goals": goals,
        "candidates": candidates,
        "selection_rule": rule,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def goal_lines(report: dict[str, Any], metrics: dict[str, float]) -> list[str]:
    """One line per goal: the figure, the goal as the workflow states it and the threshold Olive applied."""
    lines = []
    for goal in report["goals"].values():
        value = metrics.get(goal["short"])
        threshold = goal["threshold"]
        met = (
            None
            if value is None or threshold is None
            else (value >= threshold if goal["op"] == ">=" else value <= threshold)
        )
        how = f"{goal['type']} {goal['value']:g}"
        if goal["type"] != "threshold" and goal["baseline"] is not None:
            how += f" from the FP32 baseline {goal['baseline']:g}"
        mark = {True: "met", False: "MISSED", None: "?"}[met]
        lines.append(f"{goal['short']} = {_fmt(value)}: goal {goal['op']} {_fmt(threshold)} ({how}): {mark}")
    return lines


def _speed_notes(report: dict[str, Any]) -> list[str]:
    chosen = report["chosen"]
    if not chosen or not chosen.get("latency_vs_input"):
        return []
    cmp = chosen["latency_vs_input"]
    notes = []
    if cmp["ratio"] and cmp["ratio"] > 1:
        noise = {True: "beyond the measured spread", False: "within the measured spread", None: "spread not measured"}
        notes.append(
            f"**Warning: the chosen model is slower than its FP32 input here**: {_fmt(cmp['candidate'])} vs "
            f"{_fmt(cmp['baseline'])} ms (x{cmp['ratio']:.2f}, {noise[cmp['beyond_noise']]})."
        )
    elif cmp["beyond_noise"] is False:
        notes.append("The chosen model is not measurably faster than its FP32 input (latency spreads overlap).")
    speed = _speed(report["columns"])
    if speed[0]:
        rivals = [
            " → ".join(c["passes"])
            for c in report["candidates"]
            if c["id"] != chosen["id"]
            and (c["goals_met"] or not report["goals"])
            and compare_latency(c["metrics"], chosen["metrics"], speed)
            and compare_latency(c["metrics"], chosen["metrics"], speed)["beyond_noise"] is False
        ]
        if rivals:
            notes.append(
                "Olive picked the chosen model by its median latency, but it is **not measurably faster** than "
                + ", ".join(rivals)
                + " (latency spreads overlap)."
            )
    return notes


def summary_markdown(report: dict[str, Any]) -> str:
    lines = [f"# olive-fp16 run report ({report['date']})", ""]
    labels = ", ".join(report["device_labels"]) or "unknown (Olive's cached run config was not found)"
    lines.append(f"Measured on: **{labels}** (the providers each candidate's sessions used are in the table).")
    backends = sorted({c["accuracy_backend"] for c in report["candidates"] if c.get("accuracy_backend")})
    if backends:
        lines.append(f"Accuracy judged by: {'; '.join(backends)}.")
    if "CPU" in report["device_labels"]:
        lines.append(
            "Latencies here are **CPU** figures: the CPU execution provider has few float16 kernels, so float16 "
            "models can be slower than float32 there; the speed-up this project targets needs the CUDA EP."
        )
    lines.append("")
    columns = report["columns"]
    has_goals = bool(report["goals"])
    speed = _speed(columns)
    pytorch_input = str(report.get("input_model_type")).lower() == "pytorchmodel"  # Olive lowercases it
    head = ["candidate", *(["goals met"] if has_goals else []), "chosen", *[c["label"] for c in columns]]
    if speed[0]:
        head.append(f"{speed[0]['label']} vs FP32 input")
    head.append("providers used")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    if report["input_model_metrics"]:
        m = report["input_model_metrics"]
        label = "FP32 input model (PyTorch)" if pytorch_input else "FP32 input model"
        row = [label, *(["-"] if has_goals else []), "-", *[_fmt(m.get(c["short"])) for c in columns]]
        if speed[0]:
            row.append("x1 (baseline)")
        row.append(
            "PyTorch (not onnxruntime)" if pytorch_input else ", ".join(report.get("target_providers") or []) or "-"
        )
        lines.append("| " + " | ".join(row) + " |")
    chosen_id = report["chosen"]["id"] if report["chosen"] else None
    for c in report["candidates"]:
        m = c["metrics"]
        row = [" → ".join(c["passes"]), *(["yes" if c["goals_met"] else "no"] if has_goals else [])]
        row.append("**yes**" if c["id"] == chosen_id else "")
        row.extend(_fmt(m.get(col["short"])) for col in columns)
        if speed[0]:
            row.append(speed_words(c["latency_vs_input"]) if c.get("latency_vs_input") else "-")
        row.append(", ".join(c["providers_used"] or ["?"]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if pytorch_input and report["input_model_metrics"]:
        lines.append(
            "The FP32 input is the PyTorch model, measured in PyTorch: the ratios to it include the ONNX conversion "
            "(onnxruntime vs PyTorch), not only the precision."
        )
        lines.append("")
    if has_goals:
        lines.append("Goals (from the workflow; thresholds as Olive applied them):")
        lines.extend(
            f"- {text}" for text in goal_lines(report, report["chosen"]["metrics"] if report["chosen"] else {})
        )
        lines.append("")
    else:
        lines.append(
            "This workflow sets **no goals**: Olive applied no accuracy condition (a precision pass may still "
            "validate its own criteria, as OnnxAutoMixedPrecision does)."
        )
        lines.append("")
    if report["chosen"]:
        c = report["chosen"]
        lines.append(f"Chosen: **{' → '.join(c['passes'])}** ({report['selection_rule']}).")
        lines.extend(_speed_notes(report))
        precision = c.get("precision")
        if precision:
            s = precision["summary"]
            lines.append(
                f"Precision: {s['nodes_fp16']} nodes in float16, {s['nodes_fp32']} kept in float32 "
                f"({s['fp32_reasons'] or 'none'}), {s['casts_inserted']} Casts."
            )
            for node in precision["fp32_nodes"][:20]:
                lines.append(f"- `{node['node']}` ({node['op_type']}): {node['rule']} — {node['detail']}")
    else:
        lines.append("**No candidate met the goals**: no model was produced. See the table for what each missed.")
    return "\n".join(lines) + "\n"


def write_picture(report: dict[str, Any], output_dir: Path) -> Path | None:
    """The labelled comparison picture for the first held-out image, from the arrays the evaluator judged
    (the same reference outputs as every figure), with the goal figures under it and in the PNG's text."""
    chosen = report["chosen"]
    if not chosen or not chosen.get("eval_outputs"):
        return None
    from PIL.PngImagePlugin import PngInfo

    from olive_fp16_pass.showcase.image_quality import comparison_picture

    with np.load(chosen["eval_outputs"]) as arrays:
        noisy, reference, output = arrays["noisy"], arrays["reference"], arrays["output"]
    name = chosen["passes"][0] if chosen["passes"] else chosen["id"]
    lines = goal_lines(report, chosen["metrics"]) or ["(the workflow sets no goals)"]
    image, texts = comparison_picture(noisy, reference, output, candidate_name=name, figure_lines=lines)
    info = PngInfo()
    info.add_text("olive-fp16-labels", json.dumps(texts))
    path = output_dir / "comparison.png"
    image.save(path, pnginfo=info)
    return path


def main(output_dir: str | Path) -> int:
    output_dir = Path(output_dir)
    try:
        report = build_report(output_dir)
    except (FileNotFoundError, MalformedFootprint) as exc:
        print(f"olive-fp16 report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # records of an unexpected shape
        print(
            f"olive-fp16 report: error: {output_dir / 'footprint.json'}: a model record is not in the layout "
            f"Olive writes ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    picture = write_picture(report, output_dir)
    report["picture"] = str(picture) if picture else None
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = summary_markdown(report)
    if picture:
        text += f"\n![noisy input | FP32 | chosen | |chosen - FP32| x50, zoomed row below]({picture.name})\n"
    (output_dir / "report.md").write_text(text)
    print(text)
    print(f"report: {output_dir / 'report.json'}, {output_dir / 'report.md'}" + (f", {picture}" if picture else ""))
    return EXIT_OK if report["chosen"] else EXIT_NO_CANDIDATE
