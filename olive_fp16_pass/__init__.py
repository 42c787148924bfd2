"""olive-fp16: safe, fast float16 and mixed-precision conversion of ONNX models, with Microsoft Olive passes.

The core works on plain `onnx.ModelProto` (or a path) and never imports Olive; the Olive passes in
`olive_fp16_pass.olive` are thin adapters over it.

Attributes are loaded lazily: the Olive auto-registration hook imports a submodule of this package at every
interpreter start, so importing the package itself must cost nothing (no onnx, numpy or onnx-ir import).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not `from typing import ...`: keeps `import olive_fp16_pass` at ~1 ms

__version__ = "0.1.0"

_LAZY = {
    "convert_float16": "olive_fp16_pass.float16",
    "auto_mixed_precision": "olive_fp16_pass.mixed_precision",
    "CriteriaNotMetError": "olive_fp16_pass.mixed_precision",
    "ProviderUnavailableError": "olive_fp16_pass.runtime",
    "ConversionResult": "olive_fp16_pass.float16",
    "ConversionReport": "olive_fp16_pass.report",
    "Float16Error": "olive_fp16_pass.errors",
    "ModelFileError": "olive_fp16_pass.errors",
    "OptionError": "olive_fp16_pass.errors",
    "UserRule": "olive_fp16_pass.user_rules",
}
__all__ = [
    "ConversionReport",
    "ConversionResult",
    "CriteriaNotMetError",
    "Float16Error",
    "ModelFileError",
    "OptionError",
    "ProviderUnavailableError",
    "UserRule",
    "auto_mixed_precision",
    "convert_float16",
]

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from olive_fp16_pass.errors import Float16Error, ModelFileError, OptionError
    from olive_fp16_pass.float16 import ConversionResult, convert_float16
    from olive_fp16_pass.mixed_precision import CriteriaNotMetError, auto_mixed_precision
    from olive_fp16_pass.report import ConversionReport
    from olive_fp16_pass.runtime import ProviderUnavailableError
    from olive_fp16_pass.user_rules import UserRule


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'olive_fp16_pass' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
