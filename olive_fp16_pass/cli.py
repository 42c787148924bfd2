"""`olive-fp16` command line: convert, mixed precision validated on your data, compare two models, check CUDA,
summarize an `olive run`, or write a package config for `olive run --package-config`.

Exit codes: 0 success; 1 accuracy criteria not met (amp, compare), no candidate met the goals (report), or
CUDA not usable (doctor); 2 bad input (the message names the file, input or option); 3 the requested
execution provider cannot run here and --strict forbids emulating it.
"""

from __future__ import annotations

import argparse
import sys

from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.options import add_cli_flags

EXIT_OK = 0
EXIT_NOT_MET = 1
EXIT_BAD_INPUT = 2
EXIT_PROVIDER_UNAVAILABLE = 3
REPORT_SCHEMA_VERSION = "1.0"  # of the JSON that `amp --report` and `compare --report` write
NODE_NAMES_HELP = "node names: exact names, or regular expressions that must match the WHOLE name (re.fullmatch)"


def _convert(args: argparse.Namespace) -> int:
    from olive_fp16_pass.float16 import convert_float16
    from olive_fp16_pass.model_io import check_text_target, write_text
    from olive_fp16_pass.options import options_from_cli

    if args.report:  # refused before the work, not after the model is written
        check_text_target(args.report, "--report")
    options = options_from_cli(args)  # a bad option is refused before any feed is read
    calibration = None
    if args.calibration_data is not None:
        from olive_fp16_pass.feeds import iter_feeds
        from olive_fp16_pass.model_compare import load_graph

        # streamed: a folder of .npz files is read one file at a time during the float32 pass
        calibration = iter_feeds(args.calibration_data, load_graph(args.model), flag="--calibration-data")
    result = convert_float16(
        args.model, **options.to_dict(), calibration_data=calibration, overflow_margin=args.overflow_margin
    )
    result.save(args.output, in_place=args.in_place)
    if args.report:
        write_text(args.report, result.report.to_json(), "--report")
    print(result.report.summary())
    return 0


def _package_config(args: argparse.Namespace) -> int:
    try:  # the core install (`.[cpu]`) has no Olive whose package config this extends
        import olive  # noqa: F401
    except ImportError as exc:
        raise Float16Error(
            f"package-config: Olive is not installed in this environment ({exc}); it is the `olive` extra: "
            'pip install -e ".[olive,cpu]" (or gpu), or source scripts/setup_env.sh olive,cpu'
        ) from exc
    from olive_fp16_pass.olive.registration import write_package_config

    path = write_package_config(args.output)
    print(f"wrote {path}: Olive's built-in passes plus olive-fp16's; use `olive run --package-config {path}`")
    return 0


def _report(args: argparse.Namespace) -> int:
    from olive_fp16_pass.showcase.run_report import main as report_main

    return report_main(args.output_dir)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Float16Error as exc:
        from olive_fp16_pass.runtime import ProviderUnavailableError

        print(f"olive-fp16: error: {exc}", file=sys.stderr)
        return EXIT_PROVIDER_UNAVAILABLE if isinstance(exc, ProviderUnavailableError) else EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    from olive_fp16_pass import __version__

    parser = argparse.ArgumentParser(
        prog="olive-fp16", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"olive-fp16 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert an ONNX model to float16", description=_convert_help())
    conv.add_argument("model", help="the float32 .onnx file (external data beside it is read too)")
    conv.add_argument("-o", "--output", required=True, help="where to write the float16 .onnx (written atomically)")
    add_cli_flags(conv)
    conv.add_argument(
        "--calibration-data",
        metavar="FEEDS",
        help="calibrated float16: one float32 run over these feeds (the formats of `amp --data`: a .npz file, a "
        "folder of .npz files, read one at a time, or a Polygraphy JSON list); nodes whose tensors leave "
        "float16's range on them stay float32 with the measured value as the reason (no search)",
    )
    conv.add_argument(
        "--overflow-margin",
        type=float,
        default=2.0,
        help="with --calibration-data: keep in float32 nodes whose tensors exceed 65504/MARGIN (default: %(default)s)",
    )
    conv.add_argument("--report", help="write the JSON conversion report (per-node decisions and reasons) here")
    conv.add_argument("--in-place", action="store_true", help="allow -o to be the input model: it is replaced")
    conv.set_defaults(func=_convert)
    _add_amp_parser(sub)
    _add_compare_parser(sub)
    doc = sub.add_parser(
        "doctor",
        help="say whether CUDA really works here for onnxruntime, and how to fix it; exit 0 only if it does",
        description="Checks the onnxruntime install, providers, GPU, CUDA/cuDNN libraries, a real CUDA session "
        "and the TF32 setting; each problem comes with the command that fixes it.",
    )
    doc.add_argument("--json", action="store_true", help="print the checks as JSON instead of text")
    doc.set_defaults(func=_doctor)
    pkg = sub.add_parser("package-config", help="write Olive's package config plus our passes")
    pkg.add_argument(
        "-o", "--output", default="olive_fp16_package_config.json", help="file to write (default: %(default)s)"
    )
    pkg.set_defaults(func=_package_config)
    rep = sub.add_parser("report", help="summarize an `olive run` output folder; exit 1 if no candidate met the goals")
    rep.add_argument("output_dir", help="the output_dir of the `olive run` (holds footprint.json)")
    rep.set_defaults(func=_report)
    return parser


def _convert_help() -> str:
    return "Convert to float16, keeping in float32 only the nodes that must stay there; the report says why. " + (
        NODE_NAMES_HELP[0].upper() + NODE_NAMES_HELP[1:] + "."
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("input data (one of --data or --random)")
    data.add_argument(
        "--data",
        metavar="FEEDS",
        help="a .npz file (keys = input names; arrays with one extra leading axis are a stack of feeds), a "
        "folder of .npz files (one feed each, name order), or a Polygraphy-style JSON list of feeds "
        "(`polygraphy run --save-inputs`)",
    )
    data.add_argument(
        "--random",
        type=int,
        metavar="N",
        help="N random feeds, uniform in [0, 1), shapes from the model; a smoke test only (the report says so)",
    )
    data.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="shape of an input with dynamic dimensions for --random, e.g. noisy:1x3x256x256 (repeatable)",
    )
    data.add_argument("--seed", type=int, default=0, help="seed of --random (default: %(default)s)")


def _add_criteria(parser: argparse.ArgumentParser, *, defaults_note: str) -> None:
    crit = parser.add_argument_group("accuracy criteria (per output, over all feeds; " + defaults_note + ")")
    crit.add_argument("--rtol", type=float, help="relative tolerance of numpy allclose: |c-r| <= atol + rtol*|r|")
    crit.add_argument("--atol", type=float, help="absolute tolerance of numpy allclose")
    crit.add_argument("--max-abs", type=float, help="upper bound on the largest absolute error")
    crit.add_argument("--mean-abs", type=float, help="upper bound on the mean absolute error")
    crit.add_argument("--p999-abs", type=float, help="upper bound on the 99.9th percentile of the absolute error")
    crit.add_argument("--min-cosine", type=float, help="lower bound on the cosine similarity with float32")
    crit.add_argument("--min-psnr", type=float, help="lower bound on the PSNR in dB (range of the float32 output)")
    crit.add_argument(
        "--per-output",
        action="append",
        default=[],
        metavar="OUTPUT:CRIT=V[,CRIT=V]",
        help="override criteria for one output, e.g. logits:max_abs=0.05,min_cosine=0.999 (repeatable)",
    )


def _add_provider_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--provider",
        default="CUDAExecutionProvider",
        help=f"execution provider to {what} on when it really runs here (default: %(default)s); otherwise "
        "float16 storage is emulated on the CPU",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 3) instead of emulating on the CPU when --provider cannot run here",
    )


def _criteria(args: argparse.Namespace, *, api_defaults: bool):
    """The criteria given as flags; none given: the Python API's defaults (amp) or None (compare)."""
    from olive_fp16_pass.compare import CRITERIA, Criteria
    from olive_fp16_pass.errors import OptionError

    given = {name: getattr(args, name) for name in CRITERIA if getattr(args, name) is not None}
    per_output: dict[str, dict[str, float]] = {}
    for spec in args.per_output:
        output, sep, rest = spec.rpartition(":")
        if not sep or not output or not rest:
            raise OptionError(f"--per-output {spec!r}: expected OUTPUT:CRIT=VALUE[,CRIT=VALUE]")
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            try:
                if not eq:
                    raise ValueError
                per_output.setdefault(output, {})[key] = float(value)
            except ValueError as exc:
                raise OptionError(f"--per-output {spec!r}: '{item}' is not CRIT=NUMBER") from exc
    if not given and not per_output:
        if not api_defaults:
            return None
        given = {"rtol": 1e-2, "atol": 1e-3}
    return Criteria(**{name: given.get(name) for name in CRITERIA}, per_output=per_output)


def _write_json(path: str, data: dict) -> None:
    """Write a report atomically: a reader never sees half a file."""
    import json
    import os
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, target)


def _add_amp_parser(sub) -> None:
    amp = sub.add_parser(
        "amp",
        help="accuracy-validated mixed precision: as much float16 as the criteria allow on your data",
        description="Mixed precision validated on real data (olive_fp16_pass.auto_mixed_precision). The last "
        "--holdout-fraction of the feeds is held out: exit 0 only when the criteria are met on it too. "
        "Exit 1 when they are not (nothing written unless --save-on-failure), 2 on bad input, 3 when "
        "--strict and --provider cannot run here.",
    )
    amp.add_argument("model", help="the float32 .onnx file")
    amp.add_argument("-o", "--output", required=True, help="where to write the mixed-precision .onnx")
    _add_data_options(amp)
    _add_criteria(amp, defaults_note="none given: rtol=1e-2 and atol=1e-3, as the Python API")
    _add_provider_options(amp, "validate candidates")
    add_cli_flags(amp, skip=("provider",))  # --provider: the one candidates are validated on
    amp.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.25,
        help="share of the feeds (the last ones) held out for the final check (default: %(default)s)",
    )
    amp.add_argument(
        "--overflow-margin",
        type=float,
        default=2.0,
        help="keep in float32 nodes whose tensors exceed 65504/MARGIN in the float32 run (default: %(default)s)",
    )
    amp.add_argument(
        "--refine-budget",
        type=int,
        default=64,
        help="most tries spent giving unneeded float32 nodes back to float16 (default: %(default)s)",
    )
    amp.add_argument(
        "--save-on-failure",
        action="store_true",
        help="when the criteria are not met, still write the search's result (the all-float32-nodes candidate, "
        "or the chosen one when only the held-out check failed); the exit code stays 1",
    )
    amp.add_argument("--report", help="write the JSON report (search, criteria, per-node decisions) here")
    amp.add_argument(
        "--no-progress",
        action="store_true",
        help="show no search progress on stderr (by default a tqdm bar, or plain lines where tqdm is not installed)",
    )
    amp.set_defaults(func=_amp)


def _stage(message: str) -> None:
    print(f"olive-fp16 amp: {message}", file=sys.stderr, flush=True)


def _amp(args: argparse.Namespace) -> int:
    from pathlib import Path

    from olive_fp16_pass.compare import CRITERIA
    from olive_fp16_pass.feeds import load_feeds, parse_shapes
    from olive_fp16_pass.mixed_precision import auto_mixed_precision
    from olive_fp16_pass.model_compare import load_graph
    from olive_fp16_pass.options import options_from_cli

    criteria = _criteria(args, api_defaults=True)
    options = options_from_cli(args)
    proto = load_graph(args.model)  # the graph only (for the feeds): the search reads the weights, memory-mapped
    feedset = load_feeds(args.data, proto, random=args.random, shapes=parse_shapes(args.shape), seed=args.seed)
    if feedset.random:
        _stage(f"RANDOM input data ({len(feedset.feeds)} feeds): a smoke test, not evidence of accuracy")
    _stage(f"{len(feedset.feeds)} feeds from {feedset.origin}; searching (criteria {criteria.to_dict()})")
    result = auto_mixed_precision(
        args.model,
        feedset.feeds,
        **{name: getattr(criteria, name) for name in CRITERIA},
        per_output=criteria.per_output or None,
        strict=args.strict,
        **options.to_dict(),  # provider included: the one given by --provider
        holdout_fraction=args.holdout_fraction,
        overflow_margin=args.overflow_margin,
        refine_budget=args.refine_budget,
        on_failure="fp32",
        progress=not args.no_progress,
    )
    search = result.report.search or {}
    met = bool(search.get("criteria_met")) and search.get("holdout_met") is not False
    written = None
    if met or args.save_on_failure:
        written = str(result.save(args.output))
    notes = []
    if search.get("holdout_samples", 0) == 0:
        notes.append("no held-out feeds (fewer than 2 feeds or --holdout-fraction 0): checked on validation only")
    record = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "command": "amp",
        "model": str(Path(args.model)),
        "output": written,
        "status": "criteria_met" if met else "criteria_not_met",
        "exit_code": EXIT_OK if met else EXIT_NOT_MET,
        "data": feedset.to_dict(),
        "notes": notes,
        "conversion": result.report.to_dict(),
    }
    if args.report:
        _write_json(args.report, record)
    return _print_amp_outcome(result, notes, feedset.random, written)


def _print_amp_outcome(result, notes: list[str], random: bool, written: str | None) -> int:
    """The search's summary on stdout, and the exit code: met on validation and held-out data, or not."""
    search = result.report.search or {}
    print(result.report.summary())
    for note in notes:
        print(f"  note: {note}")
    if random:
        print("  warning: validated on RANDOM data (--random): the figures say nothing about real inputs")
    if bool(search.get("criteria_met")) and search.get("holdout_met") is not False:
        print(f"criteria met on validation and held-out data; wrote {written}")
        return EXIT_OK
    failures = search.get("failures") or []
    print(
        "criteria NOT met"
        + (f": {'; '.join(failures[:3])}" if failures else " on the held-out data")
        + (f"; wrote the search's result anyway to {written} (--save-on-failure)" if written else "; nothing written")
    )
    return EXIT_NOT_MET


def _add_compare_parser(sub) -> None:
    cmp = sub.add_parser(
        "compare",
        help="run two models on the same feeds and show per-output errors; --localize finds where FP16 goes wrong",
        description="Per output: max / mean / 99.9th-percentile absolute error, cosine similarity, PSNR, NaN/Inf "
        "counts, and whether the given criteria hold. Runs on --provider when it really works here, else on the "
        "CPU with float16 storage emulated for a float16 model (unless --no-emulation). Exit 0 when the criteria "
        "hold (no criteria: when the candidate has no NaN/Inf where the reference is finite), 1 when not, 2 on bad "
        "input.",
    )
    cmp.add_argument("reference", help="the reference model (usually the float32 original)")
    cmp.add_argument("candidate", help="the model to check (float16 or mixed precision)")
    _add_data_options(cmp)
    _add_criteria(cmp, defaults_note="none given: only NaN/Inf where the reference is finite fails")
    _add_provider_options(cmp, "run both models")
    cmp.add_argument(
        "--no-emulation",
        action="store_true",
        help="on the CPU, run a float16 model as it is (the CPU provider computes float16 ops in float32 behind "
        "Casts: intermediate overflow is hidden) instead of emulating float16 storage",
    )
    cmp.add_argument(
        "--localize",
        nargs="?",
        type=int,
        const=5,
        default=0,
        metavar="K",
        help="also list the first K (default 5) tensors, in topological order, where the error jumps",
    )
    cmp.add_argument(
        "--localize-threshold",
        type=float,
        default=1e-2,
        help="relative error (mean |diff| / mean |reference|) above which a tensor can count as a jump "
        "(default: %(default)s)",
    )
    cmp.add_argument("--report", help="write the comparison as JSON here")
    cmp.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from olive_fp16_pass.feeds import load_feeds, parse_shapes
    from olive_fp16_pass.model_compare import compare_models, load_proto, summary_table

    criteria = _criteria(args, api_defaults=False)
    reference = load_proto(args.reference)
    candidate = load_proto(args.candidate)
    feedset = load_feeds(args.data, reference, random=args.random, shapes=parse_shapes(args.shape), seed=args.seed)
    result = compare_models(
        reference,
        candidate,
        feedset.feeds,
        reference_label=args.reference,
        candidate_label=args.candidate,
        provider=args.provider,
        strict=args.strict,
        emulate=not args.no_emulation,
        criteria=criteria,
        localize=args.localize,
        localize_threshold=args.localize_threshold,
    )
    code = EXIT_OK if result["criteria_met"] else EXIT_NOT_MET
    record = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "command": "compare",
        "exit_code": code,
        "data": feedset.to_dict(),
    }
    record.update(result)
    if args.report:
        _write_json(args.report, record)
    print(summary_table(result))
    if feedset.random:
        print("warning: compared on RANDOM data (--random): the figures say nothing about real inputs")
    return code


def _doctor(args: argparse.Namespace) -> int:
    from olive_fp16_pass.doctor import main as doctor_main

    return doctor_main(as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
