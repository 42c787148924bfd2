"""`olive-fp16` command line: convert a model, or write a package config for `olive run --package-config`."""

from __future__ import annotations

import argparse
import sys

from olive_fp16_pass.errors import Float16Error
from olive_fp16_pass.options import add_cli_flags


def _convert(args: argparse.Namespace) -> int:
    from olive_fp16_pass.float16 import convert_float16
    from olive_fp16_pass.model_io import check_text_target, write_text
    from olive_fp16_pass.options import options_from_cli

    if args.report:  # refused before the work, not after the model is written
        check_text_target(args.report, "--report")
    result = convert_float16(args.model, **options_from_cli(args).to_dict())
    result.save(args.output, in_place=args.in_place)
    if args.report:
        write_text(args.report, result.report.to_json(), "--report")
    print(result.report.summary())
    return 0


def _package_config(args: argparse.Namespace) -> int:
    from olive_fp16_pass.olive.registration import write_package_config

    path = write_package_config(args.output)
    print(f"wrote {path}: Olive's built-in passes plus olive-fp16's; use `olive run --package-config {path}`")
    return 0


def _report(args: argparse.Namespace) -> int:
    from olive_fp16_pass.olive.run_report import main as report_main

    return report_main(args.output_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="olive-fp16", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert an ONNX model to float16")
    conv.add_argument("model")
    conv.add_argument("-o", "--output", required=True)
    add_cli_flags(conv)
    conv.add_argument("--report", help="write the JSON report here")
    conv.add_argument("--in-place", action="store_true", help="allow -o to be the input model: it is replaced")
    conv.set_defaults(func=_convert)
    pkg = sub.add_parser("package-config", help="write Olive's package config plus our passes")
    pkg.add_argument("-o", "--output", default="olive_fp16_package_config.json")
    pkg.set_defaults(func=_package_config)
    rep = sub.add_parser("report", help="summarize an `olive run` output folder; exit 1 if no candidate met the goals")
    rep.add_argument("output_dir")
    rep.set_defaults(func=_report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Float16Error as exc:
        print(f"olive-fp16: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
