"""Loading models with clear errors and explicit safety checks, and saving them atomically.

Both routes (a path, or a `ModelProto` already in memory) go through `load`: the same structural checks,
the same external-data security rules (`external_data_checks`), the same validation and repairs
(`load_repair`), and the same check that a model and its data file belong together (`data_pairing`).
Loading goes through onnx-ir so that external data stays on disk (memory-mapped) until a tensor is really
read: a 2 GB+ model then costs about its own size in memory, not several times it.

Saving writes into a hidden temporary folder beside the destination and renames the files out of it, data
files first and the model last, so a failure never leaves a half-written model; the folder's name carries
the writer's process id, so the next save to the same place removes what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from olive_fp16_pass import data_pairing, ir_serde
from olive_fp16_pass.errors import ModelFileError, OptionError
from olive_fp16_pass.external_data_checks import check_external_data, has_external_data
from olive_fp16_pass.load_repair import scan_model, validate

# protobuf cannot serialize a message of 2 GiB or more; above this we must write external data.
PROTOBUF_LIMIT = 2**31 - 1
# Leave headroom below the protobuf limit for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Hidden temporary folders are named `.<model name><TMP_MARK><pid>.<random>`.
TMP_MARK = ".olive-fp16-tmp."

__all__ = ["LoadedModel", "detach_from_input", "has_external_data", "load", "load_model_file", "save_model"]


@dataclass
class LoadedModel:
    """A checked model: the onnx-ir form, the (possibly repaired) proto, and what loading had to say."""

    model: ir.Model
    proto: onnx.ModelProto  # without external data loaded; a repaired copy if repairs were needed
    external: bool
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: tuple[Path, ...] = ()  # the model file and its data files: what a save must not overwrite
    # (GraphIndex, ElementTypes) of `model`, where a reader computed them before the conversion (the calibration):
    # the conversion reuses them instead of walking and typing the same graph again
    analysis: tuple | None = field(default=None, repr=False)


def _check_readable_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror})") from None
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected an ONNX model file (.onnx)")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file (a FIFO or device?): refused, never read")
    if info.st_size == 0:
        raise ModelFileError(f"{path}: empty file, expected an ONNX model")


def _read_proto(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ModelFileError(
            f"{path}: not an ONNX model or a truncated one (protobuf could not parse it: {exc})"
        ) from exc
    except Exception as exc:  # onnx.load raises assorted errors for junk input
        raise ModelFileError(f"{path}: cannot be read as an ONNX model ({type(exc).__name__}: {exc})") from exc


def load(model: onnx.ModelProto | str | os.PathLike) -> LoadedModel:
    """Check and load a model given as a path or a ModelProto; the caller's proto is never modified.

    A ModelProto's external data is resolved against the current directory, as `onnx` resolves it, and held
    to the same rules as a file's (inside that folder, regular files, consistent sizes).
    """
    if isinstance(model, onnx.ModelProto):
        source, base, proto, files = "model", Path.cwd(), model, ()
    else:
        path = Path(model)
        _check_readable_file(path)
        source, base, proto, files = str(path), path.parent, _read_proto(path), (path,)
    scan = scan_model(proto)  # one walk for external data and for what validate repairs
    external = scan.external
    if external:
        summary = check_external_data(
            proto, base, source, on_files=lambda found: data_pairing.check_pairs(proto, found, source)
        )
        files = (*files, *summary.files.values())
    checked = validate(proto, source, scan)
    ir_model = ir_serde.deserialize_model(checked.proto)
    if external:
        set_base_dir(ir_model, Path(os.path.abspath(base)))
    return LoadedModel(ir_model, checked.proto, external, checked.repairs, checked.warnings, files)


def load_model_file(path: str | os.PathLike) -> tuple[ir.Model, bool]:
    """Load a model file lazily; return the model and whether it uses external data.

    Errors name the file and what is wrong with it (missing, a folder, empty, not ONNX, truncated, unsafe or
    missing external data, a cycle) instead of surfacing a protobuf traceback.
    """
    loaded = load(path)
    return loaded.model, loaded.external


def release_external(model: ir.Model) -> None:
    """Unmap external tensors once read: a later read maps them again. Every mapped copy of a >2 GB model's
    weights would otherwise stay resident in this process, once per copy of the model the search holds."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                with contextlib.suppress(BufferError):  # an array still reads it: keep that map
                    value.const_value.release()


def set_base_dir(model: ir.Model, base_dir: Path) -> None:
    """Point lazily loaded external tensors, Constants' included, at the model's folder.

    deserialize leaves the folder empty, which reads relative to the current directory: a same-named file
    there would be used silently.
    """
    for graph in model.graphs():
        ir.external_data.set_base_dir(graph, base_dir)
    for function in model.functions.values():
        for node in function:
            for tensor in _attribute_tensors(node):
                if isinstance(tensor, ir.ExternalTensor):
                    tensor.base_dir = str(base_dir)


def _attribute_tensors(node: ir.Node) -> Iterator[ir.TensorProtocol]:
    for attr in node.attributes.values():
        if attr.is_ref():
            continue
        if attr.type == ir.AttributeType.TENSOR and attr.value is not None:
            yield attr.value
        elif attr.type == ir.AttributeType.TENSORS and attr.value is not None:
            yield from attr.value


def check_data_name(name: str, model_name: str) -> None:
    """An external-data name is one plain file name: it is written beside the model, never elsewhere."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or os.path.isabs(name):
        raise OptionError(
            f"external_data_name: {name!r} must be a plain file name (no folder, no absolute path): the data file "
            "is written beside the model"
        )
    if name == model_name:
        raise OptionError(f"external_data_name: {name!r} is the model file's own name")


def _check_output_path(path: Path, what: str = "output path") -> None:
    if path.is_dir():
        raise OptionError(f"{what} {path}: is a directory, expected a file name")
    for ancestor in path.parents:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise OptionError(f"{what} {path}: {ancestor} is a file, not a folder")
            break


def check_text_target(path: str | os.PathLike, what: str) -> Path:
    """Refuse, before any work is done, a file target (a `--report`) that cannot be written."""
    path = Path(path)
    _check_output_path(path, what)
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{what} {path}: folder {existing} is not writable")
    if existing == folder:  # root passes os.access everywhere: try it (a read-only mount, /proc)
        probe = folder / f".{path.name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}"
        try:
            probe.touch(exist_ok=False)
        except OSError as exc:
            raise OptionError(f"{what} {path}: folder {folder} is not writable ({exc.strerror})") from exc
        probe.unlink()
    return path


def write_text(path: str | os.PathLike, text: str, what: str) -> Path:
    """Write a small text file atomically (temporary file, then rename) with errors that name the option."""
    path = check_text_target(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}"
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise OptionError(f"{what} {path}: cannot write ({exc.strerror or exc})") from exc
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_not_input(targets: list[Path], inputs: tuple[Path, ...], in_place: bool) -> None:
    if in_place:
        return
    for target in targets:
        for source in inputs:
            if target.exists() and _same_file(target, source):
                raise OptionError(
                    f"output path {target}: is the input's own file {source}; writing it would replace the input. "
                    "Choose another output, or ask for in-place explicitly (in_place=True, CLI --in-place)"
                )


def clean_leftovers(folder: Path, model_name: str) -> list[Path]:
    """Remove temporary folders of earlier saves of `model_name` whose process is gone (killed mid-save)."""
    removed = []
    prefix = f".{model_name}{TMP_MARK}"
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or entry.is_symlink() or not entry.is_dir():
            continue
        pid_text = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rename(source: Path, target: Path) -> None:
    """The renames that publish a save (one place: the kill -9 tests stop a save between two of them)."""
    os.replace(source, target)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; move its files out (the model last) only if the body succeeds."""
    folder = path.parent
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(f"output path {path}: cannot create folder {folder} ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK):
        raise OptionError(f"output path {path}: folder {folder} is not writable")
    if not folder.is_dir():
        raise OptionError(f"output path {path}: {folder} is not a folder")
    clean_leftovers(folder, path.name)
    tmp = folder / f".{path.name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
    except OSError as exc:  # root passes os.access, yet a read-only mount still refuses
        raise OptionError(f"output path {path}: folder {folder} is not writable ({exc.strerror})") from exc
    try:
        yield tmp
        # Data files first, the model file last: the model only appears once everything it needs is there.
        items = sorted(tmp.iterdir(), key=lambda item: item.name == path.name)
        for item in items:
            _rename(item, folder / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    external_data_name: str | None = None,
    size_threshold: int = 1024,
    inputs: tuple[Path, ...] = (),
    in_place: bool = False,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Save `model` to `path` atomically; external data when asked or when the model needs it (>~2 GB).

    `external_data=None` decides by size, so the default never fails on a large model. `inputs` are the
    files the model was read from: overwriting one of them is refused unless `in_place`. `check(model file)`
    runs on the complete files in the temporary folder before they are published: if it raises, nothing is
    written (the load check of external-data results, load_check.SaveCheck).
    """
    path = Path(path)
    _check_output_path(path)
    if external_data_name is not None:
        check_data_name(external_data_name, path.name)
    if external_data is None:
        external_data = estimate_size(model) > EXTERNAL_DATA_THRESHOLD
    data_name = external_data_name or f"{path.name}.data"
    targets = [path, path.parent / data_name] if external_data else [path]
    _check_not_input(targets, inputs, in_place)
    _materialize_attributes(model)
    with atomic_output(path) as tmp:
        tmp_model = tmp / path.name
        try:
            if external_data:
                ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=size_threshold)
                data_pairing.seal(tmp_model, tmp / data_name, data_name)
            else:
                _materialize_external(model)
                ir.save(model, tmp_model)
            _restore_opaque_types(model, tmp_model)
        except OSError as exc:
            raise OptionError(f"output path {path}: cannot write ({exc.strerror or exc})") from exc
        if check is not None:
            check(tmp_model)
    return path


def _restore_opaque_types(model: ir.Model, written: Path) -> None:
    """Write back into the saved file the map types onnx-ir held untyped (ir_serde.py); the data file stays."""
    types = ir_serde.opaque_types(model)
    if not types:
        return
    proto = onnx.load(str(written), load_external_data=False)
    if ir_serde.restore_types(proto, types):
        written.write_bytes(proto.SerializeToString())


def detach_from_input(model: ir.Model, *, keep_external: bool) -> None:
    """Make `model` savable by a writer that knows nothing of its source (Olive's `ir_model_to_olive_model`).

    Tensors still lazily read from the input's data file (weights kept in float32) are otherwise written as
    references to that file by its relative name, which does not exist beside the output. Writers that save
    external data copy them into their own file (`keep_external=True`); a single-file save needs them in memory.
    """
    _materialize_attributes(model)
    if not keep_external:
        _materialize_external(model)


def _materialize_attributes(model: ir.Model) -> None:
    """Read external tensors held by attributes (Constants) into memory: onnx-ir writes only initializers to
    the new data file, so they would otherwise point at the input's data from the output's folder."""
    nodes = [node for graph in model.graphs() for node in graph]
    nodes += [node for function in model.functions.values() for node in function]
    for node in nodes:
        for attr in node.attributes.values():
            if attr.is_ref() or attr.value is None:
                continue
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.ExternalTensor):
                node.attributes[attr.name] = ir.AttrTensor(attr.name, _in_memory(attr.value))
            elif attr.type == ir.AttributeType.TENSORS and any(isinstance(t, ir.ExternalTensor) for t in attr.value):
                tensors = [_in_memory(t) if isinstance(t, ir.ExternalTensor) else t for t in attr.value]
                node.attributes[attr.name] = ir.AttrTensors(attr.name, tensors)


def _in_memory(tensor: ir.ExternalTensor) -> ir.Tensor:
    return ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name)


def _materialize_external(model: ir.Model) -> None:
    """Read external tensors into memory so a single-file save does not point at the input's data file."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                value.const_value = _in_memory(tensor)


def estimate_size(model: ir.Model) -> int:
    """Bytes of tensor data held by the model's initializers (the part that can exceed protobuf's limit)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total
