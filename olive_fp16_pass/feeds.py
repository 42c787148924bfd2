"""Input feeds for the command line: `.npz` files, a folder of them, Polygraphy-style JSON, or random data.

The command line has no Python data loader, so feeds come from files in the formats users already have:

- a `.npz` file whose keys are the model's input names: one feed; or, when every array has one axis more
  than the model's input (a stack of samples, `np.savez(f, x=np.stack(samples))`), one feed per entry of
  that first axis;
- a folder of such `.npz` files, read in name order (each file one feed, or a stack); a file whose arrays all
  lack the batch dimension (one axis less than the input, whose first dimension is 1 or dynamic), as
  `workflows/my_model_data.py` writes them for Olive, is one feed with a batch axis of 1 added;
- a JSON file as `polygraphy run --save-inputs` writes it: a list of feeds, each name -> array, an array
  being Polygraphy's encoding (`{"array": base64 of np.save, "polygraphy_class": "ndarray"}`) or a plain
  nested list of numbers;
- `random=N`: N feeds drawn from the model's declared shapes (dynamic dimensions from `shapes`), uniform in
  [0, 1) for float inputs: a smoke test, never evidence of accuracy, and labelled "random" wherever reported.

Every feed is checked against the model's inputs here, and an error names the file (and entry) at fault, so
a bad feed is a clear exit 2 on the command line, not a traceback from inside onnxruntime.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from olive_fp16_pass.errors import Float16Error

Feed = dict[str, np.ndarray]


def check_feeds(proto: onnx.ModelProto, feeds: list[Feed], what: str = "data") -> None:
    """Names, ranks and element kinds of every feed against the model's inputs, with one clear error."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in initializers}
    for k, feed in enumerate(feeds):
        if not isinstance(feed, Mapping):
            raise Float16Error(f"{what}[{k}]: expected a dict of input name -> array, got {type(feed).__name__}")
        missing = sorted(set(inputs) - set(feed))
        unknown = sorted(set(feed) - set(inputs))
        if missing or unknown:
            raise Float16Error(
                f"{what}[{k}]: input names do not match the model (missing: {missing or '-'}; "
                f"unknown: {unknown or '-'}; model inputs: {sorted(inputs)})"
            )
        for name, value in inputs.items():
            if value.type.WhichOneof("value") != "tensor_type":  # a map or sequence input: onnxruntime checks it
                continue
            array = np.asarray(feed[name])
            tensor_type = value.type.tensor_type
            dims = tensor_type.shape.dim
            if tensor_type.HasField("shape") and array.ndim != len(dims):
                raise Float16Error(
                    f"{what}[{k}]['{name}']: rank {array.ndim} (shape {array.shape}), the model expects rank "
                    f"{len(dims)}"
                )
            for axis, dim in enumerate(dims):
                if dim.HasField("dim_value") and array.shape[axis] != dim.dim_value:
                    raise Float16Error(
                        f"{what}[{k}]['{name}']: shape {array.shape}, the model expects {dim.dim_value} on axis {axis}"
                    )
            expected = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            if np.issubdtype(expected, np.floating) != np.issubdtype(array.dtype, np.floating):
                raise Float16Error(f"{what}[{k}]['{name}']: dtype {array.dtype}, the model expects {expected}")


@dataclass
class FeedSet:
    """The feeds, where each came from (for error messages and the report), and whether they are random."""

    feeds: list[Feed]
    sources: list[str]
    kind: str  # "npz", "npz-folder", "polygraphy-json", "random"
    origin: str
    random: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "origin": self.origin, "samples": len(self.feeds), "random": self.random}
        if self.random:
            data["warning"] = "random input data: the criteria were checked on random feeds, not on real data"
        if self.notes:
            data["notes"] = self.notes
        return data


def model_inputs(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """The graph inputs a feed must provide (initializers listed as inputs are optional overrides)."""
    initializers = {t.name for t in proto.graph.initializer}
    return {i.name: i for i in proto.graph.input if i.name not in initializers}


def _rank(value: onnx.ValueInfoProto) -> int | None:
    tensor_type = value.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def _batch_dim_free(value: onnx.ValueInfoProto) -> bool:
    """Whether the input's first dimension takes a batch of one (1, or dynamic)."""
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and (not dims[0].HasField("dim_value") or dims[0].dim_value == 1)


def _split_stack(arrays: dict[str, np.ndarray], inputs: dict[str, onnx.ValueInfoProto], source: str) -> list[Feed]:
    """One feed, or one per entry of the first axis when every array has one axis more than its input.

    A sample without the batch dimension (every array one axis short, each input's first dimension 1 or dynamic),
    as `workflows/my_model_data.py` and Olive's datasets write them, is one feed with a batch axis of 1 added, so
    the folder a workflow reads is also one the command line reads."""
    ranks = {name: _rank(inputs[name]) for name in arrays if name in inputs}
    if ranks and all(
        r is not None and arrays[n].ndim == r - 1 and _batch_dim_free(inputs[n]) for n, r in ranks.items()
    ):
        return [{name: array[np.newaxis] if name in ranks else array for name, array in arrays.items()}]
    stacked = bool(ranks) and all(r is not None and arrays[n].ndim == r + 1 for n, r in ranks.items())
    if not stacked:
        return [dict(arrays)]
    counts = {arrays[n].shape[0] for n in ranks}
    if len(counts) != 1:
        raise Float16Error(
            f"{source}: stacked feeds (one axis more than the model's inputs) must hold the same number of "
            f"samples; first axes: {', '.join(f'{n}={arrays[n].shape[0]}' for n in ranks)}"
        )
    count = counts.pop()
    return [{name: array[k] if name in ranks else array for name, array in arrays.items()} for k in range(count)]


def _load_npz(path: Path, inputs: dict[str, onnx.ValueInfoProto]) -> list[Feed]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise Float16Error(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    if not arrays:
        raise Float16Error(f"{path}: the .npz file holds no arrays (expected keys: {', '.join(inputs)})")
    return _split_stack(arrays, inputs, str(path))


def _decode_array(value, where: str) -> np.ndarray:
    if isinstance(value, dict):
        marker = value.get("polygraphy_class", value.get("polygraphy_serialized_json_type"))
        if marker != "ndarray" or "array" not in value:
            raise Float16Error(
                f"{where}: expected an array (Polygraphy's {{'array': ..., 'polygraphy_class': 'ndarray'}})"
            )
        try:
            return np.load(io.BytesIO(base64.b64decode(value["array"])), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise Float16Error(f"{where}: the encoded array cannot be decoded ({exc})") from exc
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise Float16Error(f"{where}: not a rectangular array of numbers ({exc})") from exc


def _load_json(path: Path) -> list[Feed]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Float16Error(f"{path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict):  # one feed
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise Float16Error(f"{path}: expected a list of feeds (objects mapping input name -> array)")
    return [
        {name: _decode_array(v, f"{path}[{k}]['{name}']") for name, v in feed.items()} for k, feed in enumerate(data)
    ]


def parse_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """`name:1x3x256x256` (Polygraphy's `--input-shapes` spelling with x, or commas) -> {name: [1, 3, 256, 256]}."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.replace(",", "x").split("x") if d.strip()]
        except ValueError as exc:
            raise Float16Error(f"--shape {spec!r}: expected NAME:DxDxD, e.g. input:1x3x256x256") from exc
    return shapes


def random_feeds(proto: onnx.ModelProto, count: int, shapes: dict[str, list[int]], seed: int = 0) -> list[Feed]:
    """`count` feeds with the model's declared shapes; every dynamic dimension must be given in `shapes`."""
    inputs = model_inputs(proto)
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise Float16Error(f"--shape: {unknown} are not inputs of the model (inputs: {sorted(inputs)})")
    resolved: dict[str, list[int]] = {}
    for name, value in inputs.items():
        if name in shapes:
            resolved[name] = shapes[name]
            continue
        dims = value.type.tensor_type.shape.dim
        missing = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if missing or not value.type.tensor_type.HasField("shape"):
            raise Float16Error(
                f"input '{name}' has dynamic dimensions ({', '.join(missing) or 'unknown rank'}): give its shape "
                f"with --shape {name}:" + "x".join(str(d.dim_value) if d.HasField("dim_value") else "N" for d in dims)
            )
        resolved[name] = [d.dim_value for d in dims]
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for name, value in inputs.items():
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            shape = resolved[name]
            if np.issubdtype(dtype, np.floating):
                feed[name] = rng.uniform(0, 1, shape).astype(dtype)
            elif dtype == np.bool_:
                feed[name] = rng.integers(0, 2, shape).astype(np.bool_)
            else:
                feed[name] = np.zeros(shape, dtype)  # indices: 0 is valid for every Gather/embedding
        feeds.append(feed)
    return feeds


def load_feeds(
    spec: str | None,
    proto: onnx.ModelProto,
    *,
    random: int | None = None,
    shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> FeedSet:
    """Feeds from `spec` (a .npz file, a folder of them, or a JSON file) or `random` feeds, checked against
    the model's inputs. Raises Float16Error naming the file at fault."""
    inputs = model_inputs(proto)
    if random is not None:
        if spec is not None:
            raise Float16Error("--data and --random: give one of them")
        if random < 1:
            raise Float16Error(f"--random: expected a number of feeds >= 1, got {random}")
        feeds = random_feeds(proto, random, shapes or {}, seed)
        result = FeedSet(feeds, [f"random[{k}]" for k in range(len(feeds))], "random", f"random x{random}", True)
    elif spec is None:
        raise Float16Error("no input data: give --data FEEDS (.npz file, folder of .npz, JSON) or --random N")
    else:
        kind, read = _reader(Path(spec), inputs, "--data")
        feeds, sources = [], []
        for feed, source in read:
            feeds.append(feed)
            sources.append(source)
        result = FeedSet(feeds, sources, kind, str(spec))
    if not result.feeds:
        raise Float16Error(f"--data {result.origin}: no feeds found")
    for feed, source in zip(result.feeds, result.sources, strict=True):
        _check_one(proto, feed, source)
    return result


def _reader(path: Path, inputs: dict[str, onnx.ValueInfoProto], flag: str) -> tuple[str, Iterator[tuple[Feed, str]]]:
    """The kind of `path` (checked now) and a generator of (feed, where it came from), reading lazily: a folder
    file by file."""
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise Float16Error(f"{flag} {path}: the folder holds no .npz files")

        def folder() -> Iterator[tuple[Feed, str]]:
            for file in files:
                loaded = _load_npz(file, inputs)
                for k, feed in enumerate(loaded):
                    yield feed, str(file) if len(loaded) == 1 else f"{file}[{k}]"

        return "npz-folder", folder()
    if not path.is_file():
        raise Float16Error(f"{flag} {path}: no such file or folder")
    if path.suffix.lower() == ".json":
        feeds = _load_json(path)
        return "polygraphy-json", ((f, f"{path}[{k}]") for k, f in enumerate(feeds))
    feeds = _load_npz(path, inputs)
    return "npz", ((f, str(path) if len(feeds) == 1 else f"{path}[{k}]") for k, f in enumerate(feeds))


def iter_feeds(spec: str, proto: onnx.ModelProto, *, flag: str = "--data") -> Iterator[Feed]:
    """The feeds of `spec` (a .npz file, a folder of them, or a JSON file) one at a time, each checked against
    the model's inputs as it is read. A folder is read file by file, so a streaming consumer (calibration)
    holds one file's arrays at a time. The path is checked at once; a bad feed raises when it is reached."""
    _, read = _reader(Path(spec), model_inputs(proto), flag)

    def checked() -> Iterator[Feed]:
        count = 0
        for feed, source in read:
            _check_one(proto, feed, source)
            count += 1
            yield feed
        if count == 0:
            raise Float16Error(f"{flag} {spec}: no feeds found")

    return checked()


def _check_one(proto: onnx.ModelProto, feed: Feed, source: str) -> None:
    """check_feeds' message with the file name in place of its list index."""
    try:
        check_feeds(proto, [feed], what="feed")
    except Float16Error as exc:
        message = str(exc).replace("feed[0]", source, 1)
        raise Float16Error(message) from exc


__all__ = ["FeedSet", "check_feeds", "iter_feeds", "load_feeds", "parse_shapes", "random_feeds"]
