"""Two checkouts measured side by side: one benchmark script run from each, rounds alternated, ratios printed.

A refactoring must not cost speed, and figures recorded on another day on a shared machine are not comparable
in absolute terms; so this runs `bench/<script>` from a BASE checkout and from this one, alternately (the order
flips each round), each with its own package first on PYTHONPATH, and compares the best and the median of the
rounds row by row:

    python bench/side_by_side.py --base ../base --rounds 3 -- convert_speed.py --tools ours --sizes 1k,5k,20k \
        --repeat 3 --no-load-check
    python bench/side_by_side.py --base ../base --rounds 3 -- amp_speed.py --runs ours-all,ours-1 --repeat 3

Rows: convert_speed's CPU seconds per (size, case, tool) (steadier than wall time on a shared machine), and
amp_speed's search seconds per (model, run). Results go to bench/results/<date>-side_by_side-<script>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


READERS = ("convert_speed.py", "amp_speed.py")


def rows_of(script: str, result: dict) -> dict[str, float]:
    """The timed rows of one result file: label -> seconds."""
    if script == "convert_speed.py":
        return {
            f"{r['size']} {r['case']} {r['tool']}": r["details"]["cpu_s"]
            for r in result["runs"]
            if r.get("status") == "ok" and r.get("details", {}).get("cpu_s") is not None
        }
    if script == "amp_speed.py":
        return {f"{r['model']} {r['run']}": r["seconds"] for r in result["results"] if r.get("status") == "ok"}
    raise SystemExit(f"side_by_side: no row reader for {script}")


def digests_of(result: dict) -> set[str]:
    """The source digests the children recorded: proof of which package each run imported."""
    runs = result.get("runs") or result.get("results") or []
    return {r.get("source_digest") or r.get("details", {}).get("source_sha") for r in runs} - {None}


def run_once(tree: Path, script: str, args: list[str], out: Path) -> tuple[dict[str, float], set[str]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(tree / "bench" / script), *args, "--out", str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.with_suffix(".json").read_text())
    return rows_of(script, result), digests_of(result)


def git_head(tree: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=Path, help="the other checkout (the reference)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("script", help="convert_speed.py or amp_speed.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments (after --)")
    ns = parser.parse_args(argv)
    args = [a for a in ns.args if a != "--"]
    trees = {"base": ns.base.resolve(), "this": HERE}
    if ns.script not in READERS:
        raise SystemExit(f"side_by_side: no row reader for {ns.script} (one of {', '.join(READERS)})")
    for name, tree in trees.items():
        if not (tree / "bench" / ns.script).is_file():
            raise SystemExit(f"side_by_side: --{name} {tree}: no bench/{ns.script} there (a checkout of this project?)")
    seen: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
    digests: dict[str, set[str]] = {"base": set(), "this": set()}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as folder:
        for k in range(ns.rounds):
            for name in ("base", "this") if k % 2 == 0 else ("this", "base"):
                rows, digest = run_once(trees[name], ns.script, args, Path(folder) / f"{name}-{k}")
                digests[name] |= digest
                for label, seconds in rows.items():
                    seen[name].setdefault(label, []).append(seconds)
    load.append(os.getloadavg())
    today = dt.date.today().isoformat()
    out = ns.out or HERE / "bench" / "results" / f"{today}-side_by_side-{Path(ns.script).stem}"
    table = []
    for label in seen["this"]:
        base, this = seen["base"].get(label), seen["this"][label]
        if not base:
            continue
        table.append(
            {
                "row": label,
                "base_s": base,
                "this_s": this,
                "ratio_best": min(this) / min(base),
                "ratio_median": statistics.median(this) / statistics.median(base),
            }
        )
    record = {
        "date": today,
        "command": " ".join(
            ["python bench/side_by_side.py", f"--base {ns.base}", f"--rounds {ns.rounds}", ns.script, *args]
        ),
        "base": {"path": str(trees["base"]), "head": git_head(trees["base"]), "sources": sorted(digests["base"])},
        "this": {"path": str(trees["this"]), "head": git_head(trees["this"]), "sources": sorted(digests["this"])},
        "cpus": os.cpu_count(),
        "load_avg_start_end": load,
        "rows": table,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# {ns.script} side by side, {today}",
        "",
        f"Command: `{record['command']}`  ",
        f"base: {record['base']['head']} ({record['base']['path']}, sources {record['base']['sources']}); "
        f"this: {record['this']['head']} (sources {record['this']['sources']}); "
        f"{record['cpus']} CPUs; load average at start {load[0][0]:.2f}, at end {load[1][0]:.2f}. "
        "Rounds alternated (order flipped each round); seconds are convert_speed's CPU seconds or amp_speed's "
        "search seconds; ratio = this / base (below 1: faster).",
        "",
        "| row | base s (best) | this s (best) | this/base best | this/base median | rounds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['row']} | {min(r['base_s']):.3f} | {min(r['this_s']):.3f} | {r['ratio_best']:.3f} | "
            f"{r['ratio_median']:.3f} | {len(r['this_s'])} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
