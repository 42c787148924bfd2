"""Benchmarks: each module runs as `python bench/NAME.py` and writes dated results to bench/results/.

A package so that the tests import the conformance harness (`bench.conformance`) and the real-model harness
(`bench.real_models`) by name instead of loading the scripts by path; shared boilerplate is in bench_env.py.
"""
