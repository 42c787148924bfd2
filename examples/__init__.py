"""Examples (run as `python examples/NAME.py`); a package so that the tests import them by name."""
