"""Maintenance scripts (run as `python scripts/NAME.py`); a package so that the tests import them by name."""
