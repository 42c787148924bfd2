"""After `olive run`: one report a person can read and a pipeline can parse, plus before/after pictures.

Reads what Olive leaves in `output_dir` (footprint.json with every candidate's metrics and whether it met the
goals, model.onnx of the chosen one) and what our evaluator wrote beside each candidate (`*.eval.json`: the
providers each session really used, every figure). Writes `report.json`, `report.md` and `comparison.png`
(noisy | FP32 | chosen | difference x50) and exits non-zero when no candidate met the goals, which Olive 0.13
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


def build_report(output_dir: Path) -> dict[str, Any]:
    footprint_path = output_dir / "footprint.json"
    if not footprint_path.is_file():
        raise FileNotFoundError(f"{footprint_path}: not found; is {output_dir} the output_dir of an `olive run`?")
    footprint = json.loads(footprint_path.read_text())
    chosen_file = output_dir / "model.onnx"
    chosen_hash = _sha256(chosen_file) if chosen_file.is_file() else None
    input_id = next((k for k, v in footprint.items() if not v.get("parent_model_id")), None)
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
        candidates.append(
            {
                "id": model_id,
                "passes": _chain(footprint, model_id),
                "metrics": _metrics(node),
                "goals_met": bool(node["metrics"].get("if_goals_met")),
                "pareto_front": bool(node.get("is_pareto_frontier")),
                "providers_used": sidecar.get("providers_used"),
                "device_label": sidecar.get("device_label", "unknown"),
                "accuracy_backend": sidecar.get("accuracy_backend"),
                "model_path": str(path) if path else None,
                "eval_outputs": str(path.with_suffix(".eval.npy")) if path else None,
                "precision": _precision_report(footprint, model_id),
            }
        )
    input_metrics = _metrics(footprint[input_id]) if input_id and footprint[input_id].get("metrics") else None
    chosen = next((c for c in candidates if c["id"] == chosen_id), None)
    labels = sorted({c["device_label"] for c in candidates})
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok" if chosen else "no_candidate_met_goals",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "output_dir": str(output_dir),
        "device_labels": labels,
        "chosen": chosen,
        "input_model_metrics": input_metrics,
        "candidates": candidates,
        "selection_rule": "fastest candidate (latency_ms, priority 1) among those meeting every goal",
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(report: dict[str, Any]) -> str:
    lines = [f"# olive-fp16 run report ({report['date']})", ""]
    labels = ", ".join(report["device_labels"]) or "unknown"
    lines.append(f"Measured on: **{labels}** (providers each session really used are listed per candidate).")
    backends = sorted({c["accuracy_backend"] for c in report["candidates"] if c.get("accuracy_backend")})
    if backends:
        lines.append(f"Accuracy judged by: {'; '.join(backends)}.")
    if any(label != "GPU (CUDA)" for label in report["device_labels"]):
        lines.append(
            "Latencies here are **CPU** figures: the CPU execution provider has few float16 kernels, so float16 "
            "models can be slower than float32 there; the speed-up this project targets needs the CUDA EP."
        )
    lines.append("")
    cols = [
        "latency_ms",
        "max_8bit_change",
        "pixels_changed_pct",
        "psnr_vs_fp32",
        "nonfinite",
        "psnr_vs_clean",
        "ssim_vs_clean",
    ]
    lines.append("| candidate | goals met | chosen | " + " | ".join(cols) + " | providers used |")
    lines.append("|---|---|---|" + "---|" * len(cols) + "---|")
    if report["input_model_metrics"]:
        m = report["input_model_metrics"]
        lines.append("| FP32 input model | - | - | " + " | ".join(_fmt(m.get(c)) for c in cols) + " | - |")
    chosen_id = report["chosen"]["id"] if report["chosen"] else None
    for c in report["candidates"]:
        m = c["metrics"]
        lines.append(
            f"| {' → '.join(c['passes'])} | {'yes' if c['goals_met'] else 'no'} | "
            f"{'**yes**' if c['id'] == chosen_id else ''} | "
            + " | ".join(_fmt(m.get(col)) for col in cols)
            + f" | {', '.join(c['providers_used'] or ['?'])} |"
        )
    lines.append("")
    if report["chosen"]:
        c = report["chosen"]
        lines.append(f"Chosen: **{' → '.join(c['passes'])}** ({report['selection_rule']}).")
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
    """noisy | FP32 | chosen | |chosen - FP32| x50 for the first held-out image."""
    chosen = report["chosen"]
    if not chosen or not chosen.get("eval_outputs") or not Path(chosen["eval_outputs"]).is_file():
        return None
    import imageio.v3 as iio
    import onnxruntime as ort

    from olive_fp16_pass.image_quality import comparison_strip
    from olive_fp16_pass.olive.denoise_eval import FP32_MODEL, eval_images

    sidecar = json.loads(Path(chosen["model_path"]).with_suffix(".eval.json").read_text())
    _, noisy = eval_images(sidecar["image_size"], sidecar["sigma"], 0)
    session = ort.InferenceSession(str(FP32_MODEL), providers=["CPUExecutionProvider"])
    fp32 = session.run(None, {session.get_inputs()[0].name: noisy[0]})[0]
    best = np.load(chosen["eval_outputs"])
    path = output_dir / "comparison.png"
    iio.imwrite(path, comparison_strip(noisy[0], fp32, best))
    return path


def main(output_dir: str | Path) -> int:
    output_dir = Path(output_dir)
    try:
        report = build_report(output_dir)
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as exc:
        print(f"olive-fp16 report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    picture = write_picture(report, output_dir)
    report["picture"] = str(picture) if picture else None
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = summary_markdown(report)
    if picture:
        text += f"\n![noisy | FP32 | chosen | difference x50]({picture.name})\n"
    (output_dir / "report.md").write_text(text)
    print(text)
    print(f"report: {output_dir / 'report.json'}, {output_dir / 'report.md'}" + (f", {picture}" if picture else ""))
    return EXIT_OK if report["chosen"] else EXIT_NO_CANDIDATE
