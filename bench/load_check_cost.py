"""What the load check costs: conversion with and without it, and the check's own time, for several checkouts.

Usage (from the repository root, in the project's venv):

    python bench/load_check_cost.py --trees base=/work/wt/loadcheck-base,new=. --sizes 1k,5k --rounds 3

Why it is built this way:

- The load check (load_check.py) opens one onnxruntime session with ORT_ENABLE_ALL per usable provider on
  every converted model. `convert_speed.py --no-load-check` gives the totals; this adds the check's own time,
  `load_check.first_failure` on the result's bytes (what `load_checked` runs), measured apart from them.
- Each (round, tree, size) runs in its own interpreter with that checkout's package first on the path, so two
  versions of the code can be compared in one run; the trees alternate (the order flips each round) so that
  a shared machine's load falls on both alike, and the minimum over rounds and repeats is reported.
- Times are wall and CPU seconds; the load average is recorded before each child.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

CHILD = r"""
import copy, gc, json, sys, time
sys.path.insert(0, sys.argv[1])
import onnx
import olive_fp16_pass
from olive_fp16_pass import convert_float16, load_check

model = onnx.load(sys.argv[2])
repeat = int(sys.argv[3])
assert olive_fp16_pass.__file__.startswith(sys.argv[1] + "/"), olive_fp16_pass.__file__
convert_float16(copy.deepcopy(model))  # imports and the provider probe, outside the figures


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return value, time.perf_counter() - wall, time.process_time() - cpu


figures = {"without": [], "with": [], "check": []}
for _ in range(repeat):
    for key, check in (("without", False), ("with", True)):
        source = copy.deepcopy(model)
        gc.collect()  # as convert_speed.py does before each conversion
        result, wall, cpu = timed(lambda: convert_float16(source, load_check=check).model)
        figures[key].append((wall, cpu))
    data = result.SerializeToString()
    gc.collect()  # the conversion's garbage, collected now, not inside the timer: load_checked runs with gc off
    gc.disable()
    failure, wall, cpu = timed(lambda: load_check.first_failure(data))
    gc.enable()
    assert failure is None, failure
    figures["check"].append((wall, cpu))
print("RESULT " + json.dumps({"figures": figures, "providers": load_check._providers()}))
"""


ENCODER = "bert-base"  # bench/transformer_model.py's encoder: real weight sizes, where prepacking shows


def parse_size(text: str) -> int | str:
    """1000, 1k, 5k: nodes of bench/synthetic.py's graph (16x16 weights); or `bert-base`."""
    text = text.strip().lower()
    if text == ENCODER:
        return text
    return int(float(text.rstrip("k")) * (1000 if text.endswith("k") else 1))


def parse_trees(text: str) -> dict[str, Path]:
    """`name=path,...`: each path a checkout whose olive_fp16_pass is measured."""
    trees = {}
    for item in text.split(","):
        name, _, path = item.partition("=")
        folder = Path(path).resolve()
        if not name or not (folder / "olive_fp16_pass" / "__init__.py").is_file():
            raise SystemExit(f"--trees: '{item}' is not name=checkout (no olive_fp16_pass/ in '{folder}')")
        trees[name] = folder
    return trees


def run_child(tree: Path, model_path: Path, repeat: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(model_path), str(repeat)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child for {tree} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def best(runs: list[dict[str, Any]], key: str, index: int) -> float:
    """The minimum over every round and repeat: the machine is shared, noise only ever adds time."""
    return min(pair[index] for run in runs for pair in run["figures"][key])


def table(results: dict[tuple[str, Any], list[dict[str, Any]]], trees: list[str], sizes: list) -> list[str]:
    lines = [
        "| model (synthetic: nodes requested) | tree | total without check s | total with check s | difference s | "
        "check's own s | check's own CPU s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for tree in trees:
            runs = results[(tree, size)]
            without, with_check = best(runs, "without", 0), best(runs, "with", 0)
            lines.append(
                f"| {size} | {tree} | {without:.3f} | {with_check:.3f} | {with_check - without:.3f} | "
                f"{best(runs, 'check', 0):.3f} | {best(runs, 'check', 1):.3f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trees", type=parse_trees, default={"this": REPO_ROOT}, help="name=checkout,...")
    parser.add_argument(
        "--sizes", type=lambda s: [parse_size(x) for x in s.split(",")], default=[1000, 5000], help="1k,5k,bert-base"
    )
    parser.add_argument("--rounds", type=int, default=3, help="children per (tree, size), trees alternated")
    parser.add_argument("--repeat", type=int, default=1, help="measurements inside each child")
    parser.add_argument("--out", type=Path, default=None, help="result path without suffix")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    import onnx

    from bench.bench_env import environment, machine_lines, write_results
    from bench.synthetic import build_graph
    from bench.transformer_model import build_encoder

    started = dt.datetime.now()
    env = environment("olive_fp16_pass (sha256 of this checkout's sources)")
    names = list(args.trees)
    results: dict[tuple[str, Any], list[dict[str, Any]]] = {(t, s): [] for t in names for s in args.sizes}
    with tempfile.TemporaryDirectory(prefix="load_check_cost-") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"synthetic-{size}.onnx"
            onnx.save(build_encoder() if size == ENCODER else build_graph(size, seed=0), path)
            for round_ in range(args.rounds):
                for tree in names if round_ % 2 == 0 else names[::-1]:
                    load = os.getloadavg()[0]
                    run = run_child(args.trees[tree], path, args.repeat)
                    run["load_avg_before"] = load
                    results[(tree, size)].append(run)
                    print(f"{size} {tree} round {round_ + 1}: load {load:.2f} {json.dumps(run['figures'])}", flush=True)
    stem = args.out or BENCH_DIR / "results" / f"{started.date().isoformat()}-load_check_cost"
    loads = [run["load_avg_before"] for runs in results.values() for run in runs]
    providers = sorted({p for runs in results.values() for run in runs for p in run["providers"]})
    md = [
        f"# Load check cost, {started.date().isoformat()}",
        "",
        f"Command: `python bench/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        *machine_lines(env),
        f"Trees: {', '.join(f'{n} = {p}' for n, p in args.trees.items())}; providers checked: {', '.join(providers)}; "
        f"load average before each child {min(loads):.2f}-{max(loads):.2f}.  ",
        f"Minimum over {args.rounds} rounds x {args.repeat} repeats (wall seconds unless said). Totals: "
        "`convert_float16(model).model` with `load_check` on / off; check's own: `load_check.first_failure` on the "
        "result's bytes.",
        "",
        *table(results, names, args.sizes),
    ]
    payload = {
        "started": started.isoformat(timespec="seconds"),
        "machine": env,
        "trees": {n: str(p) for n, p in args.trees.items()},
        "settings": {"sizes": args.sizes, "rounds": args.rounds, "repeat": args.repeat},
        "runs": [{"tree": t, "size": s, **run} for (t, s), runs in results.items() for run in runs],
    }
    write_results(stem, payload, md)
    print("\n".join(md[-len(args.sizes) * len(names) - 2 :]))
    print(f"results: {stem}.md, {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
