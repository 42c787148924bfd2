"""ONNX Runtime sessions on the execution provider a model will run on, never a silent CPU fallback.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine with no GPU, and a session asked
for it alone then runs on the CPU with only a logged error. So a provider counts as usable only after a probe
session really ran on it (`session.get_providers()`), and every later session is checked the same way.
The CPU execution provider is never used as evidence of float16 accuracy: it computes float16 ops in float32
behind inserted Casts. Validation there uses float16-storage emulation instead (switchable.py, emulation.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from olive_fp16_pass import ir_serde
from olive_fp16_pass.errors import Float16Error, first_line

CPU = "CPUExecutionProvider"
EMULATION = "fp16-storage-emulation"


class ProviderUnavailableError(Float16Error):
    """The requested execution provider cannot run here, and `strict` forbids emulating it."""


class ProviderFallbackError(Float16Error):
    """A session asked for one provider silently ran on another."""


@dataclass(frozen=True)
class ValidationBackend:
    """Where candidates are validated: a real provider, or float16-storage emulation on the CPU, and why."""

    requested: str
    mode: str  # "provider" or "emulation"
    provider: str  # the provider sessions really use
    reason: str

    @property
    def emulated(self) -> bool:
        return self.mode == "emulation"

    def to_dict(self) -> dict:
        return {"requested": self.requested, "mode": self.mode, "provider": self.provider, "reason": self.reason}


def probe_model() -> bytes:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


@functools.cache
def provider_status(provider: str) -> tuple[bool, str]:
    """(usable, reason). Probes once per process with a real session."""
    if provider == CPU:
        return True, "available"
    available = ort.get_available_providers()
    if provider not in available:
        build = "onnxruntime-gpu" if provider == "CUDAExecutionProvider" else "an onnxruntime build with it"
        return False, (
            f"{provider} is not in this onnxruntime build (installed: {ort.__version__}, providers: "
            f"{', '.join(available)}); install {build} instead of onnxruntime"
        )
    if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # the probe below reports what really matters
            ort.preload_dlls()
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(probe_model(), options, providers=[provider])
        session.run(None, {"x": np.ones(4, np.float16)})
    except Exception as exc:
        return False, f"{provider} failed to run a probe model ({type(exc).__name__}: {str(exc)[:300]})"
    used = session.get_providers()
    if not used or used[0] != provider:
        return False, (
            f"{provider} is listed by onnxruntime but a session asked for it ran on {used[0] if used else 'nothing'}"
            " (no usable GPU, or CUDA/cuDNN libraries missing)"
        )
    return True, "available"


def choose_backend(provider: str, *, strict: bool = False) -> ValidationBackend:
    """Validate on `provider` if it really works here; else emulate float16 storage on the CPU, or raise."""
    if provider == CPU:
        return ValidationBackend(
            provider,
            "emulation",
            CPU,
            "the CPU execution provider computes float16 ops in float32 behind Casts and hides overflow; "
            "float16 storage is emulated instead",
        )
    usable, reason = provider_status(provider)
    if usable:
        return ValidationBackend(provider, "provider", provider, f"validated on {provider}")
    if strict:
        raise ProviderUnavailableError(
            f"provider {provider}: {reason}. Run on a machine where it works, or set strict=False to validate "
            "with float16-storage emulation on the CPU"
        )
    return ValidationBackend(provider, "emulation", CPU, f"{reason}; float16 storage emulated on the CPU instead")


# In-memory tensors at least this large are handed to onnxruntime as OrtValues instead of being serialized into
# the model bytes (which copies them twice and fails past protobuf's 2 GB), when they add up to
# SUPPLY_IN_MEMORY_TOTAL; below that the plain serialized session is kept, as it always was.
SUPPLY_MIN_BYTES = 1 << 20
SUPPLY_IN_MEMORY_TOTAL = 1 << 30
# Above this many bytes of weights, MLAS weight prepacking (a second, packed copy of every MatMul weight) is off:
# it would double the memory of a >2 GB model (measured: +256 MiB for one 8192x8192 weight), and so is the CPU
# memory arena, which keeps every transient tensor of a run (a rounded weight copy per reader) allocated.
BIG_MODEL_BYTES = 1 << 30
_PLACEHOLDER = "olive_fp16_supplied_in_memory"
# Element types onnxruntime's Python binding wraps from numpy.
_SUPPLIABLE = {
    ir.DataType.FLOAT,
    ir.DataType.FLOAT16,
    ir.DataType.DOUBLE,
    ir.DataType.INT8,
    ir.DataType.UINT8,
    ir.DataType.INT16,
    ir.DataType.UINT16,
    ir.DataType.INT32,
    ir.DataType.UINT32,
    ir.DataType.INT64,
    ir.DataType.UINT64,
    ir.DataType.BOOL,
}


class SessionFactory:
    """Creates sessions, counts them, and checks each one runs on the provider it was asked for.

    Models with external data are sessions too. onnxruntime resolves an external `location` against the model
    file's folder, and a session built from bytes has none: it looks in the current directory ("External data
    path validation failed", or, worse, a same-named file there is used). So sessions of a model whose data is
    in `base_dir` name that folder (`session.model_external_initializers_file_folder_path`): onnxruntime then
    memory-maps the data file in place (no copy; measured: +7 MiB at session creation for a 256 MiB weight)
    and applies its own containment checks (no `../`, no symlink out of the folder).
    """

    def __init__(
        self,
        backend: ValidationBackend,
        base_dir: str | os.PathLike | None = None,
        big: bool = False,
        *,
        in_memory: bool = False,
    ) -> None:
        """`in_memory`: the caller knows its models hold all their data (model_io.load checked the source, and
        a session's model derives from it), so no proto is walked for external references: that walk was 3% of
        a search on enc300 of bench/amp_speed.py, over the 1,700 nodes of its gated model."""
        self.backend = backend
        self.base_dir = base_dir
        self.in_memory = in_memory and base_dir is None
        self.big = big  # weights of BIG_MODEL_BYTES or more: spare memory over speed
        self.created = 0
        self.providers_seen: set[str] = set()

    def session(
        self,
        model: onnx.ModelProto | ir.Model | bytes | str,
        *,
        emulation: bool,
        threads: int | None = None,
        prepack: bool = True,
    ) -> ort.InferenceSession:
        """`threads`: onnxruntime's intra-op threads (None: its default, one per core). `prepack=False`: no
        repacked copy of the weights, for a session that runs once (a load check; load_check.py says why that
        changes no rewrite)."""
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        if emulation:
            # Graph optimizations could fold the rounding Cast pairs that make the emulation.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            providers = [CPU]
        else:
            providers = [self.backend.provider]
        supplied: dict[str, np.ndarray] = {}
        if isinstance(model, ir.Model):
            model, supplied = serialize_supplying(model)
        if isinstance(model, onnx.ModelProto):
            if self.base_dir is not None:
                # named whether or not this proto references the folder: onnxruntime reads it only for the
                # tensors that do, so no walk over the proto is needed
                folder = os.fspath(self.base_dir)
                options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            elif not self.in_memory and has_external_references(model):
                raise Float16Error(
                    "model: its weights are in external files and it was given as a ModelProto, which has no "
                    "folder to find them in: pass the model's path instead"
                )
            data = model.SerializeToString()
        else:
            data = model
        if supplied:
            values = [ort.OrtValue.ortvalue_from_numpy(array) for array in supplied.values()]
            options.add_external_initializers(list(supplied), values)
        if self.big or not prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        if self.big:
            options.enable_cpu_mem_arena = False
        self.created += 1  # counted when tried: a session that fails to load costs the same
        session = ort.InferenceSession(data, options, providers=providers)
        used = session.get_providers()
        self.providers_seen.update(used)
        if used[0] != providers[0]:
            raise ProviderFallbackError(f"a session asked for {providers[0]} ran on {used[0]}: results discarded")
        return session


def has_external_references(proto: onnx.ModelProto) -> bool:
    """Whether any tensor (initializer or Constant, in any graph) keeps its data in an external file."""
    from olive_fp16_pass.model_io import has_external_data

    return has_external_data(proto)


def _aligned(array: np.ndarray) -> np.ndarray:
    """onnxruntime needs aligned, contiguous memory for an OrtValue."""
    return array if array.flags.aligned and array.flags.c_contiguous else np.ascontiguousarray(array.copy())


def serialize_supplying(model: ir.Model) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model as protobuf without its large in-memory tensors (when they add up to a lot), plus those tensors.

    Serializing a candidate holding 1+ GB of weights would copy them twice (protobuf, then bytes) and fails
    past 2 GB; instead they stay where they are and are supplied to the session as OrtValues.
    """
    graph = model.graph
    large = [
        value
        for value in graph.initializers.values()
        if isinstance(value.const_value, ir.Tensor)
        and value.const_value.nbytes >= SUPPLY_MIN_BYTES
        and value.const_value.dtype in _SUPPLIABLE
    ]
    if sum(v.const_value.nbytes for v in large) < SUPPLY_IN_MEMORY_TOTAL:
        return ir_serde.serialize_model(model), {}
    supplied = {}
    originals = {}
    try:
        for value in large:
            tensor = value.const_value
            supplied[value.name] = _aligned(tensor.numpy())
            originals[id(value)] = (value, tensor)
            value.const_value = ir.ExternalTensor(
                _PLACEHOLDER, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=tensor.name or value.name
            )
        proto = ir_serde.serialize_model(model)
    finally:
        for value, tensor in originals.values():
            value.const_value = tensor
    return proto, supplied


def run_session(session: ort.InferenceSession, feed: dict[str, np.ndarray], outputs: list[str] | None = None):
    """Run with feeds cast to each input's declared float type (float16 models take float16 feeds)."""
    typed = {}
    for arg in session.get_inputs():
        if not arg.type.startswith("tensor("):  # a map or a sequence (DictVectorizer's input): as given
            typed[arg.name] = feed[arg.name]
            continue
        array = np.asarray(feed[arg.name])
        if arg.type == "tensor(float16)" and array.dtype != np.float16:
            with np.errstate(over="ignore"):  # a mask's -3.4e38 is -inf in float16, as a user's cast gives
                array = array.astype(np.float16)
        elif arg.type == "tensor(float)" and array.dtype != np.float32:
            array = array.astype(np.float32)
        typed[arg.name] = array
    return [tensor_view(value) for value in session.run(outputs, typed)]


def tensor_view(output: Any) -> np.ndarray:
    """One session output as a numpy array, so that every output can be compared like a tensor.

    Non-tensor outputs come back from onnxruntime as Python containers: ai.onnx.ml's ZipMap (what scikit-learn
    classifiers export by default) returns a list of {class: probability} dicts, which becomes a (rows,
    classes) array, columns in sorted key order; a map becomes a 1-D array the same way; a sequence of
    tensors, its elements flattened end to end (they may differ in shape).
    """
    if isinstance(output, dict):
        return np.asarray([output[key] for key in sorted(output)])
    if isinstance(output, list):
        if not output:
            return np.zeros(0, np.float32)
        if isinstance(output[0], dict):
            return np.stack([tensor_view(row) for row in output])
        return np.concatenate([np.asarray(item).ravel() for item in output])
    return np.asarray(output)


@functools.cache
def onnxruntime_load_problem(ir_version: int, opset: int) -> str | None:
    """Why this onnxruntime cannot load models of this IR version / default opset, or None if it can.

    onnxruntime exposes no maximum; a tiny probe model with the same versions answers it exactly.
    """
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [x],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
    except Exception as exc:
        first = first_line(exc)
        return f"onnxruntime {ort.__version__} cannot load IR version {ir_version} / opset {opset}: {first}"
    return None
