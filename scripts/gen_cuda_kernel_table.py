"""Generate olive_fp16_pass/data/cuda_kernels.json: the CUDA execution provider's kernels per op and type.

Why a table: whether a float16 node runs on the GPU depends on onnxruntime having registered a CUDA kernel for
that op, opset and type; a node without one runs on the CPU with copies around it. The converter must know
this on machines with no GPU (CI, laptops), so the registrations are written down once per supported
onnxruntime version and shipped with the package.

Two sources, one table format:

* ``--from-runtime`` (the one the shipped file comes from): ask an installed onnxruntime-gpu for its registered
  kernels, ``onnxruntime.capi.onnxruntime_pybind11_state.get_all_opkernel_def()``, which is what onnxruntime's
  own ``tools/python/gen_opkernel_doc.py`` uses to write ``docs/OperatorKernels.md``. Run it with the Python
  of a throwaway venv that holds ``onnxruntime-gpu[cuda,cudnn]==<version>`` (never next to the CPU
  onnxruntime). Creating the CUDA provider object calls cudaSetDevice & co, which fail without a GPU;
  ``--stub-cuda`` builds (with gcc) stubs of those few runtime calls and of libcuda.so.1 / libnvinfer.so.10
  (which the provider libraries link to), then re-runs this script with them preloaded. The stubs only let
  the provider object be constructed: kernels are registered by the provider library itself when it is
  loaded, so the list is the one the real binary holds. Nothing runs on a device.
* ``--from-markdown FILE``: parse the "Operators implemented by CUDAExecutionProvider" section of
  onnxruntime's ``docs/OperatorKernels.md`` (for a version you can check it belongs to).

Usage:
    .venv-gpu/bin/python scripts/gen_cuda_kernel_table.py --from-runtime --stub-cuda \
        --source-note "onnxruntime-gpu 1.31.1 wheel from PyPI, sha256 ..."
    python scripts/gen_cuda_kernel_table.py --from-markdown OperatorKernels.md --version 1.31.1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROVIDER = "CUDAExecutionProvider"
OPEN_END = 2147483647  # INT_MAX: how onnxruntime writes "and every later opset"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "olive_fp16_pass" / "data" / "cuda_kernels.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class KernelEntry:
    """One registration: op, domain, opset range [since, until] (until None = open) and types per constraint."""

    domain: str
    op_type: str
    since: int
    until: int | None
    types: dict[str, tuple[str, ...]]


def normalize_domain(domain: str) -> str:
    return "ai.onnx" if domain in ("", "ai.onnx") else domain


def short_type(type_str: str) -> str:
    """'tensor(float16)' -> 'float16', 'seq(tensor(float))' -> 'seq(float)': the table stores element types."""
    type_str = type_str.strip()
    match = re.fullmatch(r"tensor\((.+)\)", type_str)
    if match:
        return match.group(1)
    match = re.fullmatch(r"(\w+)\(tensor\((.+)\)\)", type_str)
    if match:
        return f"{match.group(1)}({match.group(2)})"
    return type_str


def merge(entries: Iterable[KernelEntry]) -> dict[str, dict[str, list]]:
    """Merge registrations of the same op and opset range (onnxruntime registers one per type) into one row.

    Rows are [since, until, {constraint: [types]}], newest range first, types sorted: the same union per
    range that OperatorKernels.md prints.
    """
    rows: dict[tuple[str, str, int, int | None], dict[str, set[str]]] = {}
    for entry in entries:
        key = (normalize_domain(entry.domain), entry.op_type, entry.since, entry.until)
        constraints = rows.setdefault(key, {})
        for name, types in entry.types.items():
            constraints.setdefault(name, set()).update(short_type(t) for t in types)
    table: dict[str, dict[str, list]] = {}
    for (domain, op_type, since, until), constraints in rows.items():
        table.setdefault(domain, {}).setdefault(op_type, []).append(
            [since, until, {name: sorted(types) for name, types in sorted(constraints.items())}]
        )
    for ops in table.values():
        for op_rows in ops.values():
            op_rows.sort(key=lambda row: row[0], reverse=True)
    return {domain: dict(sorted(ops.items())) for domain, ops in sorted(table.items())}


# --- source 1: the kernels an installed onnxruntime-gpu registers ------------------------------------------


def entries_from_kernel_defs(defs: Iterable) -> list[KernelEntry]:
    """KernelDef objects (or dicts with the same fields) of get_all_opkernel_def(), CUDA ones only."""
    entries = []
    for kernel in defs:
        get = kernel.get if isinstance(kernel, dict) else lambda name, k=kernel: getattr(k, name)
        if get("provider") != PROVIDER:
            continue
        since, until = get("version_range")
        entries.append(
            KernelEntry(
                domain=get("domain"),
                op_type=get("op_name"),
                since=int(since),
                until=None if int(until) >= OPEN_END else int(until),
                types={name: tuple(types) for name, types in get("type_constraints").items()},
            )
        )
    return entries


def read_runtime() -> tuple[list[KernelEntry], dict]:
    import importlib.metadata

    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    if PROVIDER not in ort.get_available_providers():
        raise SystemExit(f"this onnxruntime ({ort.__version__}) has no {PROVIDER}: run with onnxruntime-gpu")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    entries = entries_from_kernel_defs(ort_c.get_all_opkernel_def())
    if not entries:
        raise SystemExit(f"get_all_opkernel_def() returned no {PROVIDER} kernel: its library did not load")
    try:
        package = f"onnxruntime-gpu {importlib.metadata.version('onnxruntime-gpu')}"
    except importlib.metadata.PackageNotFoundError:
        package = f"onnxruntime {ort.__version__}"
    detail = {
        "method": "onnxruntime.capi.onnxruntime_pybind11_state.get_all_opkernel_def() "
        "(as onnxruntime's tools/python/gen_opkernel_doc.py, which writes docs/OperatorKernels.md)",
        "package": package,
        "build_info": ort.get_build_info(),
        "stubbed_cuda": bool(os.environ.get("_GEN_CUDA_TABLE_STUBBED")),
    }
    return entries, detail


# --- source 2: onnxruntime's docs/OperatorKernels.md --------------------------------------------------------

_SECTION = re.compile(r"^##\s+Operators implemented by\s+(\w+)")
_DOMAIN_ROW = re.compile(r"^\|\*\*Operator Domain:\*\*\s*\*([^*]+)\*")
_CONSTRAINT = re.compile(r"\*\*(\w+)\*\*\s*=\s*(.*)")
_TYPE = re.compile(r"\w+\((?:[^()]|\([^()]*\))*\)")  # tensor(float), seq(tensor(float))


def _parse_versions(text: str) -> tuple[int, int | None]:
    text = text.strip()
    if text.endswith("+"):
        return int(text[:-1]), None
    match = re.fullmatch(r"\[\s*(\d+)\s*,\s*(\d+)\s*\]", text)
    if match:
        return int(match.group(1)), int(match.group(2))
    if text.isdigit():
        return int(text), int(text)
    raise ValueError(f"unrecognised opset range {text!r}")


def _parse_types(text: str) -> dict[str, tuple[str, ...]]:
    types = {}
    for part in re.split(r"<br\s*/?>", text):
        match = _CONSTRAINT.search(part)
        if match:
            types[match.group(1)] = tuple(t.strip() for t in _TYPE.findall(match.group(2)))
    return types


def entries_from_markdown(text: str, provider: str = PROVIDER) -> list[KernelEntry]:
    """Rows of one provider's section of OperatorKernels.md; a row with an empty name continues the op above."""
    entries = []
    in_section = False
    domain = "ai.onnx"
    op_type = None
    for line_no, line in enumerate(text.splitlines(), 1):
        section = _SECTION.match(line)
        if section:
            in_section = section.group(1) == provider
            continue
        if not in_section or not line.startswith("|"):
            continue
        domain_row = _DOMAIN_ROW.match(line)
        if domain_row:
            domain, op_type = domain_row.group(1).strip(), None
            continue
        row = line.strip()
        cells = [cell.strip() for cell in row[1 : -1 if row.endswith("|") else None].split("|")]
        is_separator = bool(cells[0]) and set(cells[0]) <= {"-"}
        if len(cells) < 4 or is_separator or cells[0] == "Op Name":
            continue
        name, versions, types = cells[0], cells[2], cells[3]
        if name:
            op_type = name
        if op_type is None:
            raise ValueError(f"line {line_no}: an opset row before any op name")
        try:
            since, until = _parse_versions(versions)
        except ValueError as exc:
            raise ValueError(f"line {line_no}: {exc}") from exc
        entries.append(KernelEntry(domain, op_type, since, until, _parse_types(types)))
    if not entries:
        raise ValueError(f"no '{provider}' section with kernel rows found")
    return entries


# --- output -------------------------------------------------------------------------------------------------


def build_table(entries: list[KernelEntry], *, version: str, source: str, detail: dict, today: str) -> dict:
    return {
        "format": FORMAT_VERSION,
        "provider": PROVIDER,
        "onnxruntime_version": version,
        "generated_on": today,
        "source": source,
        "source_detail": detail,
        "generator": "scripts/gen_cuda_kernel_table.py",
        "rows": "per domain and op: [since_opset, until_opset (null = open), {type constraint: [element types]}]",
        "kernels": merge(entries),
    }


def to_json(table: dict) -> str:
    """JSON with one op per line: small, and a new onnxruntime version shows up as a readable diff."""
    header = {k: v for k, v in table.items() if k != "kernels"}
    lines = json.dumps(header, indent=1)[:-2].splitlines()
    lines[-1] += ","
    lines.append(' "kernels": {')
    domains = list(table["kernels"].items())
    for d, (domain, ops) in enumerate(domains):
        lines.append(f"  {json.dumps(domain)}: {{")
        items = list(ops.items())
        for i, (op_type, rows) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            lines.append(f"   {json.dumps(op_type)}: {json.dumps(rows)}{comma}")
        lines.append("  }" + ("," if d < len(domains) - 1 else ""))
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _stub_sources() -> dict[str, str]:
    ok = "{ return 0; }"
    runtime = "\n".join(
        [
            "#include <stddef.h>",
            f"int cudaSetDevice(int d) {ok}",
            f"int cudaDeviceSynchronize(void) {ok}",
            f"int cudaGetDeviceProperties(void *p, int d) {ok}",
            f"int cudaGetDeviceProperties_v2(void *p, int d) {ok}",
            "int cudaMemGetInfo(size_t *f, size_t *t) { *f = *t = (size_t)1 << 34; return 0; }",
            "int cudaGetDeviceCount(int *n) { *n = 1; return 0; }",
            "int cudaGetDevice(int *d) { *d = 0; return 0; }",
            "int cudaDeviceGetAttribute(int *v, int a, int d) { *v = 0; return 0; }",
            "int cudaDriverGetVersion(int *v) { *v = 13000; return 0; }",
            "int cudaRuntimeGetVersion(int *v) { *v = 13000; return 0; }",
        ]
    )
    null = "{ return NULL; }"
    return {
        "libcudastub.so": runtime,
        "libcuda.so.1": "int cuTensorMapEncodeTiled(void) { return 1; }\nint cuInit(unsigned f) { return 100; }",
        "libnvinfer.so.10": "\n".join(
            [
                "#include <stddef.h>",
                f"void *createInferBuilder_INTERNAL(void *l, int v) {null}",
                f"void *createInferRefitter_INTERNAL(void *e, void *l, int v) {null}",
                f"void *createInferRuntime_INTERNAL(void *l, int v) {null}",
                "int getInferLibVersion(void) { return 101300; }",
                f"void *getPluginRegistry(void) {null}",
            ]
        ),
        "libnvonnxparser.so.10": "\n".join(
            [
                "#include <stddef.h>",
                f"void *createNvOnnxParser_INTERNAL(void *n, void *l, int v) {null}",
                f"void *createNvOnnxParserRefitter_INTERNAL(void *r, void *l, int v) {null}",
            ]
        ),
    }


def rerun_with_stubs(argv: list[str]) -> int:
    """Build the stubs in a temporary folder and run this script again with them preloaded."""
    with tempfile.TemporaryDirectory(prefix="cuda_stub_") as folder:
        for name, source in _stub_sources().items():
            c_file = Path(folder, name.split(".so")[0] + ".c")
            c_file.write_text(source + "\n")
            subprocess.run(
                ["gcc", "-shared", "-fPIC", "-w", f"-Wl,-soname,{name}", "-o", str(Path(folder, name)), str(c_file)],
                check=True,
            )
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [folder, env.get("LD_LIBRARY_PATH")]))
        env["LD_PRELOAD"] = str(Path(folder, "libcudastub.so"))
        env["_GEN_CUDA_TABLE_STUBBED"] = "1"
        args = [a for a in argv if a != "--stub-cuda"]
        return subprocess.run([sys.executable, __file__, *args], env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-runtime", action="store_true", help="read the installed onnxruntime-gpu's kernels")
    source.add_argument("--from-markdown", type=Path, help="parse this docs/OperatorKernels.md")
    parser.add_argument("--stub-cuda", action="store_true", help="with --from-runtime on a machine with no GPU")
    parser.add_argument("--version", help="onnxruntime version the markdown belongs to (required with it)")
    parser.add_argument("--source-note", default="", help="where the package or file came from (kept in the file)")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="generation date (ISO)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    if args.from_runtime:
        if args.stub_cuda and not os.environ.get("_GEN_CUDA_TABLE_STUBBED"):
            return rerun_with_stubs(argv)
        import onnxruntime as ort

        entries, detail = read_runtime()
        version = ort.__version__
        description = f"kernels registered by {detail['package']}, read with get_all_opkernel_def()"
    else:
        if not args.version:
            parser.error("--from-markdown needs --version (the onnxruntime version the file belongs to)")
        entries = entries_from_markdown(args.from_markdown.read_text(encoding="utf-8"))
        version = args.version
        detail = {
            "method": f"parsed the {PROVIDER} section of docs/OperatorKernels.md",
            "file": str(args.from_markdown),
        }
        description = f"onnxruntime {version} docs/OperatorKernels.md"
    if args.source_note:
        detail["note"] = args.source_note
    table = build_table(entries, version=version, source=description, detail=detail, today=args.date)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(to_json(table), encoding="utf-8")
    ops = sum(len(v) for v in table["kernels"].values())
    print(f"{args.output}: {len(entries)} {PROVIDER} registrations, {ops} ops, onnxruntime {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
