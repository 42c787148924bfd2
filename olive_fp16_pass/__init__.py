"""olive-fp16: safe, fast float16 and mixed-precision conversion of ONNX models, with Microsoft Olive passes.

The core works on plain `onnx.ModelProto` (or a path) and never imports Olive; the Olive passes in
`olive_fp16_pass.olive` are thin adapters over it.
"""

from olive_fp16_pass.errors import Float16Error, ModelFileError, OptionError
from olive_fp16_pass.float16 import ConversionResult, convert_float16
from olive_fp16_pass.report import ConversionReport

__version__ = "0.1.0"
__all__ = ["ConversionReport", "ConversionResult", "Float16Error", "ModelFileError", "OptionError", "convert_float16"]
