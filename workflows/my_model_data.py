"""Example data script for `workflows/my_model_fp16*.json`: your model's input feeds, one `.npz` file per sample.

Two jobs, so that a new user has data in one command and a pattern to copy for real data:

- `python workflows/my_model_data.py --model model.onnx --out feeds/ --count 16` writes `feeds/0000.npz` ...
  with **random** arrays of the model's input shapes (dynamic dimensions from `--shape name:1x3x224x224`, the
  batch dimension excluded: Olive's dataloader adds it). Random data validates ranges and overflow, not what
  your users feed the model: for accuracy you trust, write `.npz` files of real inputs instead (same layout:
  one array per input name, without the batch dimension).
- Imported by Olive (the workflow's `user_script`), it registers the dataset `npz_feeds`, which yields
  `({input_name: array}, 0)` items from every `.npz` file of `data_dir` in name order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

_ONNX_TO_NUMPY = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


class NpzFeeds:
    """Every `.npz` of a folder as one feed; a clear error when the folder is missing or empty."""

    def __init__(self, data_dir: str | Path) -> None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"npz_feeds: data_dir {folder} is not a folder (write it with my_model_data.py)")
        self.files = sorted(folder.glob("*.npz"))
        if not self.files:
            raise FileNotFoundError(f"npz_feeds: no .npz file in {folder}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with np.load(self.files[index]) as data:
            return {name: data[name] for name in data.files}, 0


try:  # registration needs Olive; writing example feeds does not
    from olive.data.registry import Registry
except ImportError:  # pragma: no cover - only when run as a plain script without Olive
    Registry = None

if Registry is not None:

    @Registry.register_dataset()
    def npz_feeds(data_dir=None, **kwargs):
        return NpzFeeds(data_dir)


def _parse_shapes(specs: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for spec in specs:
        name, _, dims = spec.rpartition(":")
        if not name or not dims:
            raise SystemExit(f"--shape {spec!r}: expected name:1x3x224x224")
        shapes[name] = [int(d) for d in dims.lower().split("x")]
    return shapes


def write_random_feeds(model_path: Path, out: Path, count: int, shapes: dict[str, list[int]], seed: int = 0) -> None:
    """Random feeds of the model's input shapes (uniform [0, 1) floats, small integers), batch dimension dropped."""
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        feed = {}
        for value in inputs:
            tensor_type = value.type.tensor_type
            dtype = _ONNX_TO_NUMPY.get(tensor_type.elem_type)
            if dtype is None:
                raise SystemExit(f"{model_path}: input {value.name}: element type {tensor_type.elem_type} unsupported")
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
            shape = shapes.get(value.name) or dims
            if any(d is None for d in shape):
                raise SystemExit(f"{model_path}: input {value.name} has dynamic dims {dims}; give --shape")
            shape = shape[1:]  # Olive's dataloader adds the batch dimension
            feed[value.name] = (
                rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else rng.integers(0, 4, shape)
            ).astype(dtype)
        np.savez(out / f"{index:04d}.npz", **feed)
    print(f"wrote {count} RANDOM feeds of {[i.name for i in inputs]} to {out} (use real inputs for real accuracy)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write random example feeds for workflows/my_model_fp16*.json")
    parser.add_argument("--model", required=True, type=Path, help="your ONNX model")
    parser.add_argument("--out", required=True, type=Path, help="folder for the .npz feeds")
    parser.add_argument("--count", type=int, default=16, help="number of feeds (default 16)")
    parser.add_argument("--shape", action="append", default=[], help="full shape of a dynamic input: name:1x3x224x224")
    args = parser.parse_args(argv)
    write_random_feeds(args.model, args.out, args.count, _parse_shapes(args.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
