"""Casts at the lower bound: one per tensor that crosses a precision boundary, none cancelling another."""

from __future__ import annotations

import numpy as np
import pytest

import olive_fp16_pass as fp16
from tests.helpers import check_converted, count_ops, lower_bound
from tests.models import random_mixed_graph


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("keep_io", [False, True])
def test_cast_count_equals_lower_bound(seed, keep_io):
    model = random_mixed_graph(seed)
    rng = np.random.default_rng(100 + seed)
    blocked = [f"n{i}" for i in range(len(model.graph.node)) if rng.random() < 0.5]
    result = fp16.convert_float16(model, node_block_list=blocked, keep_io_types=keep_io)
    fp32_nodes = {d.node for d in result.report.fp32_nodes}
    assert fp32_nodes == set(blocked)
    out = result.model
    expected = lower_bound(model, fp32_nodes, keep_io)
    assert count_ops(out, "Cast") == expected == result.report.casts_inserted
    # No Cast reads another Cast's output (no pairs that cancel out).
    cast_outputs = {n.output[0] for n in out.graph.node if n.op_type == "Cast"}
    assert not [n.name for n in out.graph.node if n.op_type == "Cast" and n.input[0] in cast_outputs]
    check_converted(model, out, atol=5e-2, rtol=5e-2)


def test_all_fp16_graph_needs_no_cast():
    model = random_mixed_graph(7)
    result = fp16.convert_float16(model)
    assert count_ops(result.model, "Cast") == 0 == lower_bound(model, set(), False)
