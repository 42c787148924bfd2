"""Checks on a model's external-data references, done before any byte of external data is read.

`onnx.checker` used to be our only guard here; we no longer run it as a gate (models it rejects but ONNX
Runtime runs are converted), so the security rules it enforced are spelled out in this module, for both the
path route and the `ModelProto` route:

* a `location` must name a file inside the model's folder: no absolute path, no `..`, no symlinked folder
  leading outside; such references are refused *before* the file system is asked anything about them, so
  the error text never tells whether a file outside the folder exists or how large it is;
* the data file must be a regular file, not a symbolic link: a FIFO or a device is refused from `lstat`
  alone and never opened (opening a FIFO blocks forever);
* `offset` and `length` must be non-negative integers, `length` must equal what the tensor's shape and type
  need, and the file must hold `offset + length` bytes;
* the tensors must fit in memory: conversion holds a float16 copy of every converted weight, so a tiny model
  pointing at a huge (possibly sparse) data file is refused with the figures instead of exhausting RAM.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from olive_fp16_pass.errors import ModelFileError

_SEPARATORS = re.compile(r"[\\/]")


def iter_tensors(proto: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto of the model (initializers, sparse parts, attributes, subgraphs, functions) and where."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _node_tensors(function.node, f"function '{function.name}'")


def _where(node: onnx.NodeProto) -> str:
    # formatted only for a node that holds a tensor: a walk over every node (has_external_data) formats none
    return f"node '{node.name or node.op_type}' attribute"


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    for tensor in graph.initializer:
        yield tensor, f"initializer '{tensor.name}'"
    for sparse in graph.sparse_initializer:
        yield sparse.values, f"sparse initializer '{sparse.values.name}' (values)"
        yield sparse.indices, f"sparse initializer '{sparse.values.name}' (indices)"
    yield from _node_tensors(graph.node, f"graph '{graph.name}'")


def _node_tensors(nodes, scope: str) -> Iterator[tuple[onnx.TensorProto, str]]:
    for node in nodes:
        for attr in node.attribute:
            kind = attr.type
            if kind == onnx.AttributeProto.TENSOR:
                yield attr.t, f"{_where(node)} '{attr.name}'"
            elif kind == onnx.AttributeProto.TENSORS:
                for tensor in attr.tensors:
                    yield tensor, f"{_where(node)} '{attr.name}'"
            elif kind == onnx.AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values, f"{_where(node)} '{attr.name}' (values)"
                yield attr.sparse_tensor.indices, f"{_where(node)} '{attr.name}' (indices)"
            elif kind == onnx.AttributeProto.SPARSE_TENSORS:
                for sparse in attr.sparse_tensors:
                    yield sparse.values, f"{_where(node)} '{attr.name}' (values)"
                    yield sparse.indices, f"{_where(node)} '{attr.name}' (indices)"
            elif kind == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(attr.g)
            elif kind == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graph_tensors(sub)


def is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def has_external_data(proto: onnx.ModelProto) -> bool:
    return any(is_external(t) for t, _ in iter_tensors(proto))


@dataclass
class ExternalDataSummary:
    """What the model's external data adds up to: its files (resolved, inside the folder) and tensor bytes."""

    files: dict[str, Path] = field(default_factory=dict)
    tensor_bytes: int = 0


def location_problem(location: str) -> str | None:
    """Why `location` cannot name a file inside the model's folder, judged from the string alone."""
    if not location:
        return "has no location"
    if "\x00" in location:
        return f"location {location!r} contains a NUL byte"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        return f"location '{location}' is an absolute path: external data must lie in the model's folder"
    if ".." in _SEPARATORS.split(location):
        return f"location '{location}' leads out of the model's folder ('..'): refused"
    return None


def tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's data needs by its type and shape; None where that is not fixed (strings, unknown)."""
    count = math.prod(tensor.dims)
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    bits = _BITS.get(tensor.data_type)
    if bits is None:
        try:
            bits = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize * 8
        except (KeyError, TypeError, ValueError):
            return None
    return (count * bits + 7) // 8


_BITS = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(onnx.TensorProto, name)
}


def _entry_int(info: dict[str, str], key: str, source: str, where: str) -> int | None:
    if key not in info:
        return None
    text = info[key]
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ModelFileError(f"{source}: external data of {where}: malformed {key} {text!r} (expected a byte count)")
    return value


def check_external_data(
    proto: onnx.ModelProto,
    base_dir: Path,
    source: str,
    on_files: Callable[[dict[str, Path]], None] | None = None,
) -> ExternalDataSummary:
    """Refuse any external-data reference that is unsafe or inconsistent; nothing is opened, only `lstat`ed.

    `base_dir` is the model's folder (the current directory for a ModelProto, as `onnx` itself resolves it).
    `on_files` sees the data files once every location is known to be safe, before sizes are compared (a
    model beside another save's data file is better told as such than as a size mismatch).
    """
    summary = ExternalDataSummary()
    sizes: dict[str, int] = {}
    real_base = Path(os.path.realpath(base_dir))
    seen: set[tuple[str, int]] = set()
    external = []
    for tensor, where in iter_tensors(proto):
        if not is_external(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        problem = location_problem(location)
        if problem:
            raise ModelFileError(f"{source}: external data of {where} {problem}")
        if location not in sizes:
            sizes[location] = _data_file_size(base_dir, real_base, location, source, where)
            summary.files[location] = base_dir / location
        external.append((tensor, where, info, location))
    if on_files is not None:
        on_files(summary.files)
    for tensor, where, info, location in external:
        offset = _entry_int(info, "offset", source, where) or 0
        length = _entry_int(info, "length", source, where)
        needed = tensor_nbytes(tensor)
        if length is not None and needed is not None and length != needed:
            raise ModelFileError(
                f"{source}: external data of {where} declares length {length}, but its type and shape "
                f"{list(tensor.dims)} need {needed} bytes"
            )
        span = length if length is not None else needed
        if span is None:
            raise ModelFileError(f"{source}: external data of {where} has no length and no fixed-size type")
        end = offset + span
        if end > sizes[location]:
            raise ModelFileError(
                f"{source}: external data file '{location}' is truncated: {where} needs bytes up to {end}, "
                f"the file has {sizes[location]}"
            )
        if (location, offset) not in seen:
            seen.add((location, offset))
            summary.tensor_bytes += span
    check_memory(summary.tensor_bytes, source)
    return summary


def _data_file_size(base_dir: Path, real_base: Path, location: str, source: str, where: str) -> int:
    path = base_dir / location
    real = Path(os.path.realpath(path))
    if real != real_base and real_base not in real.parents:
        # A symlinked folder on the way: say so without telling what lies at the other end.
        raise ModelFileError(
            f"{source}: external data location '{location}' of {where} leads out of the model's folder"
        )
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{source}: external data file '{location}' of {where} not found in {base_dir}") from None
    except OSError as exc:
        raise ModelFileError(f"{source}: external data file '{location}' of {where}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ModelFileError(
            f"{source}: external data file '{location}' of {where} is a symbolic link: refused (a link can "
            "point anywhere; copy the file into the model's folder)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(
            f"{source}: external data file '{location}' of {where} is not a regular file (a FIFO, device or "
            "folder): refused, never read"
        )
    return info.st_size


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping out (Linux MemAvailable + free swap)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    if "MemAvailable" not in values:
        return None
    return values["MemAvailable"] + values.get("SwapFree", 0)


def check_memory(tensor_bytes: int, source: str) -> None:
    """Refuse external data whose conversion cannot fit in memory (about its own size: the float16 copies
    plus the pages of the source read while converting), instead of letting the kernel kill the process."""
    available = available_memory()
    if available is None or tensor_bytes <= available:
        return
    raise ModelFileError(
        f"{source}: its external data declares {_gib(tensor_bytes)} of tensors; converting needs about as much "
        f"memory and {_gib(available)} is available: refused (is the data file sparse or its shapes wrong?)"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
