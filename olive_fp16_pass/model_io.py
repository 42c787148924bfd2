"""Loading models with clear errors, and saving them atomically.

Loading goes through onnx-ir so that external data stays on disk (memory-mapped) until a tensor is really
read: a 2 GB+ model then costs about its own size in memory, not several times it. Saving writes to a
temporary file in the destination folder and renames it, so a failure never leaves a half-written model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from olive_fp16_pass.errors import ModelFileError, OptionError

# protobuf cannot serialize a message of 2 GiB or more; above this we must write external data.
PROTOBUF_LIMIT = 2**31 - 1
# Leave headroom below the protobuf limit for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected an ONNX model file (.onnx)")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, expected an ONNX model")


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Check every external tensor's data file exists and is long enough, before anything is converted."""
    base = path.parent
    sizes: dict[str, int] = {}
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        data_path = base / location
        if location not in sizes:
            if not location or not data_path.is_file():
                raise ModelFileError(
                    f"{path}: external data file '{location}' of initializer '{tensor.name}' not found in {base}"
                )
            sizes[location] = data_path.stat().st_size
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if end > sizes[location]:
            raise ModelFileError(
                f"{path}: external data file '{location}' is truncated: initializer '{tensor.name}' needs "
                f"bytes up to {end}, the file has {sizes[location]}"
            )


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto.graph))


def load_model_file(path: str | os.PathLike) -> tuple[ir.Model, bool]:
    """Load a model file lazily; return the model and whether it uses external data.

    Errors name the file and what is wrong with it (missing, a folder, empty, not ONNX, truncated, missing
    external data, structurally invalid) instead of surfacing a protobuf traceback.
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ModelFileError(
            f"{path}: not an ONNX model or a truncated one (protobuf could not parse it: {exc})"
        ) from exc
    except Exception as exc:  # onnx.load raises assorted errors for junk input
        raise ModelFileError(f"{path}: cannot be read as an ONNX model ({type(exc).__name__}: {exc})") from exc
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelFileError(f"{path}: not an ONNX model or a truncated one (it holds no graph)")
    _check_external_data(proto, path)
    try:
        # The checker needs the path for models with external data or over 2 GB.
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a valid ONNX model (possibly truncated): {first_line}") from exc
    external = has_external_data(proto)
    model = ir.serde.deserialize_model(proto)
    if external:
        _set_base_dir(model, path.parent)
    return model, external


def _set_base_dir(model: ir.Model, base_dir: Path) -> None:
    """Point lazily loaded external tensors at the model's folder (deserialize leaves it empty)."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                tensor.base_dir = str(base_dir)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it to `path` only if the body succeeds."""
    folder = path.parent
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(f"output path {path}: cannot create folder {folder} ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK):
        raise OptionError(f"output path {path}: folder {folder} is not writable")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=folder))
    try:
        yield tmp
        # Data files first, the model file last: the model only appears once everything it needs is there.
        items = sorted(tmp.iterdir(), key=lambda item: item.name == path.name)
        for item in items:
            os.replace(item, folder / item.name)
    finally:
        _remove_tree(tmp)


def _remove_tree(folder: Path) -> None:
    if not folder.exists():
        return
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    external_data_name: str | None = None,
    size_threshold: int = 1024,
) -> Path:
    """Save `model` to `path` atomically; external data when asked or when the model needs it (>~2 GB).

    `external_data=None` decides by size, so the default never fails on a large model.
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise OptionError(f"output path {path}: is a directory, expected a file name such as model.onnx")
    if external_data is None:
        external_data = estimate_size(model) > EXTERNAL_DATA_THRESHOLD
    data_name = external_data_name or f"{path.name}.data"
    with atomic_output(path) as tmp:
        tmp_model = tmp / path.name
        if external_data:
            ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=size_threshold)
        else:
            _materialize_external(model)
            ir.save(model, tmp_model)
    return path


def _materialize_external(model: ir.Model) -> None:
    """Read external tensors into memory so a single-file save does not point at the input's data file."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                value.const_value = ir.Tensor(tensor.numpy(), name=tensor.name)


def estimate_size(model: ir.Model) -> int:
    """Bytes of tensor data held by the model's initializers (the part that can exceed protobuf's limit)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total
