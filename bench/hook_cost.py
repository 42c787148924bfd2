"""What the auto-registration import hook costs every Python start (README, "In an Olive workflow").

The installed `olive_fp16_pass_autoregister.pth` imports `olive_fp16_pass.olive.import_hook` in every interpreter
of the environment. This runs `python -X importtime -c pass` RUNS times and reads, from the same run, the
cumulative import time of the hook (`olive_fp16_pass.olive.import_hook`, the package included) and of `site` (all
start-up imports, the hook among them), so the ratio is measured side by side on a machine whose load varies.
Needs the package installed in the interpreter's environment (the `.pth` in site-packages); exits 2 otherwise.

    python bench/hook_cost.py [--runs 15]          # prints the figures, writes bench/results/<date>-hook_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import REPO_ROOT, environment

LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s*(\S+)")


def one_start() -> dict[str, float]:
    """Cumulative import times (ms) of the hook and of site in one `python -X importtime -c pass`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, timeout=60, check=True
    )
    cumulative = {m.group(3): int(m.group(2)) / 1000 for m in map(LINE.match, proc.stderr.splitlines()) if m}
    return {"hook_ms": cumulative.get("olive_fp16_pass.olive.import_hook", 0.0), "site_ms": cumulative.get("site", 0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="interpreter starts to time (default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="print only; write nothing under bench/results/")
    args = parser.parse_args()
    runs = [one_start() for _ in range(args.runs)]
    if not any(run["hook_ms"] for run in runs):
        print("hook_cost: the import hook did not run: install the package in this environment first", file=sys.stderr)
        return 2
    hook = [run["hook_ms"] for run in runs]
    share = [run["hook_ms"] / run["site_ms"] for run in runs if run["site_ms"]]
    result = {
        "runs": args.runs,
        "hook_ms": {"min": min(hook), "median": statistics.median(hook), "max": max(hook)},
        "hook_share_of_site": {"min": min(share), "median": statistics.median(share), "max": max(share)},
        "per_run": runs,
        "environment": environment("olive_fp16_sources"),
    }
    print(
        f"import hook: median {result['hook_ms']['median']:.1f} ms (min {min(hook):.1f}, max {max(hook):.1f}) over "
        f"{args.runs} starts; median share of site's start-up imports {statistics.median(share):.0%}"
    )
    if not args.no_save:
        out = REPO_ROOT / "bench" / "results" / f"{datetime.date.today().isoformat()}-hook_cost.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
