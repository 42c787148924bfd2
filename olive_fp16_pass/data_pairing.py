"""A model file and its external-data file must belong together, even after a save was killed.

A save renames the data file into place first and the model file last. Overwriting an existing pair is two
renames, and no file system makes two renames atomic: a kill -9 between them leaves the *old* model beside
the *new* data. The old model then loads in ONNX Runtime and computes garbage (NaN) from offsets into the
wrong file. So every data file we write ends with a seal, a digest of its tensor bytes, and the model we
write beside it records that digest in `metadata_props`. On load, a data file carrying a seal the model
does not record is the mixed state and is refused with an error that says so. Data files we did not write
carry no seal and are not judged. The seal lies after the last tensor, where no offset points: ONNX
Runtime and onnx read the file as before.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import onnx

from olive_fp16_pass.errors import ModelFileError

SEAL_PREFIX = b"\nolive-fp16 data seal "
_SEAL = re.compile(rb"\nolive-fp16 data seal ([0-9a-f]{32})\n\Z")
SEAL_SIZE = len(SEAL_PREFIX) + 32 + 1
METADATA_KEY = "olive_fp16.data_seal:"  # + the data file's name


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


def seal(model_path: Path, data_path: Path, data_name: str) -> None:
    """Append the seal to a freshly written data file and record it in the freshly written model file."""
    if not data_path.exists():  # every tensor stayed below the size threshold: no data file
        return
    value = _digest(data_path)
    with open(data_path, "ab") as handle:
        handle.write(SEAL_PREFIX + value.encode() + b"\n")
    proto = onnx.load(str(model_path), load_external_data=False)
    key = METADATA_KEY + data_name
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
            break
    else:
        proto.metadata_props.add(key=key, value=value)
    model_path.write_bytes(proto.SerializeToString())


def read_seal(path: Path) -> str | None:
    """The seal at the end of a data file, or None. Only called on regular files (see external_data_checks)."""
    size = path.stat().st_size
    if size < SEAL_SIZE:
        return None
    with open(path, "rb") as handle:
        handle.seek(size - SEAL_SIZE)
        match = _SEAL.search(handle.read(SEAL_SIZE))
    return match.group(1).decode() if match else None


def check_pairs(proto: onnx.ModelProto, files: dict[str, Path], source: str) -> None:
    """Refuse a model beside a data file sealed for another model (an interrupted overwrite)."""
    recorded = {e.key[len(METADATA_KEY) :]: e.value for e in proto.metadata_props if e.key.startswith(METADATA_KEY)}
    for location, path in files.items():
        try:
            found = read_seal(path)
        except OSError:
            continue  # unreadable: reading the tensors will say so
        if found is not None and recorded.get(os.path.basename(location)) != found:
            raise ModelFileError(
                f"{source}: its external data file '{location}' was written by a different save than the model "
                "(an overwrite was interrupted between its two renames): the pair does not belong together and "
                "would compute wrong values; convert the model again"
            )
