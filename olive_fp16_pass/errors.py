"""Errors raised for bad input.

Every error names the file, node or option at fault, so that a user never has to read a traceback from deep
inside onnx or protobuf to find out what went wrong.
"""

from __future__ import annotations


class Float16Error(ValueError):
    """A conversion could not be done because of the input model or the options given."""


class ModelFileError(Float16Error):
    """The model file (or its external data) is missing, unreadable or not a valid ONNX model."""


class OptionError(Float16Error):
    """An option has a bad value or contradicts another option."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (onnxruntime's run to many lines of C++ context), or its type
    when it has none: what a one-line Float16Error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
