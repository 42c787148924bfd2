"""Node costs (FLOPs, bytes, Casts) and the cost-weighted search (issue 10.3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.node_cost import (
    CAST_BYTES_PER_ELEMENT,
    NodeCost,
    fp16_share,
    give_back_order,
    links_of,
    node_cost,
    node_costs,
    static_shapes,
)
from tests.helpers import init, make_model, vi
from tests.models import attention_block, attention_feeds


def test_flops_of_heavy_ops_and_elementwise():
    shapes = {"a": (2, 8, 16), "b": (16, 32), "y": (2, 8, 32)}
    matmul = node_cost(helper.make_node("MatMul", ["a", "b"], ["y"]), shapes)
    assert matmul.flops == 2 * 2 * 8 * 32 * 16 and matmul.known
    assert matmul.bytes == 4 * (2 * 8 * 16 + 16 * 32 + 2 * 8 * 32)
    gemm = node_cost(
        helper.make_node("Gemm", ["A", "B", "C"], ["Y"], transA=1), {"A": (16, 4), "B": (16, 8), "C": (8,), "Y": (4, 8)}
    )
    assert gemm.flops == 2 * 4 * 8 * 16 + 4 * 8
    conv = node_cost(
        helper.make_node("Conv", ["x", "w"], ["z"], group=1), {"x": (1, 3, 8, 8), "w": (6, 3, 3, 3), "z": (1, 6, 6, 6)}
    )
    assert conv.flops == 2 * (6 * 6 * 6) * (3 * 3 * 3)
    softmax = node_cost(helper.make_node("Softmax", ["s"], ["p"]), {"s": (4, 64), "p": (4, 64)})
    assert softmax.flops == 5 * 256
    add = node_cost(helper.make_node("Add", ["s", "c"], ["t"]), {"s": (4, 64), "c": (64,), "t": (4, 64)})
    assert add.flops == 256
    unknown = node_cost(helper.make_node("Relu", ["u"], ["v"]), {})
    assert unknown == NodeCost(0.0, 0.0, False)


def test_static_shapes_keep_only_fully_static_declarations():
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [vi("x", TensorProto.FLOAT, ["batch", 4])],
        [vi("y", TensorProto.FLOAT, [2, 4])],
        [init("w", np.zeros(4, np.float32))],
    )
    assert static_shapes(model) == {"w": (4,), "y": (2, 4)}
    costs = node_costs(model, ["add"], {"x": (2, 4)})
    assert costs["add"].known and costs["add"].flops == 8


def test_give_back_order_counts_casts():
    """Two float32 nodes of equal cost: the one next to float16 neighbours saves Casts on its return; the one
    between float32 neighbours would add them, so it goes last."""
    costs = {"a": NodeCost(100, 0, True), "b": NodeCost(100, 0, True), "c": NodeCost(10_000, 0, True)}
    links = {"a": [("n16", 10)], "b": [("m32", 10)], "c": [("m32", 10)]}
    order = give_back_order(["b", "a", "c"], costs, links, fp32={"a", "b", "c", "m32"})
    assert order == ["c", "a", "b"]  # a: 100 + 60 saved; b: 100 - 60 added
    # Casts can outweigh a node's own cost.
    big_cast = {"a": [("n16", 100_000)]}
    assert give_back_order(["c", "a"], costs, big_cast, fp32={"a", "c"}) == ["a", "c"]
    assert 100 + CAST_BYTES_PER_ELEMENT * 100_000 > 10 * 10_000
    # Within a decade of gain, the given order (the search's ranking) stays.
    near = {"a": NodeCost(300, 0, True), "b": NodeCost(500, 0, True)}
    assert give_back_order(["a", "b"], near, {}, fp32={"a", "b"}) == ["a", "b"]


def test_links_between_main_graph_nodes():
    block = attention_block()
    labels = [n.name for n in block.graph.node]
    links = links_of(block, labels, {"masked": (1, 8, 8)})
    assert links["mask_add"] == [("softmax", 64)] and links["softmax"] == [("mask_add", 64)]


def test_fp16_share_by_nodes_and_flops():
    costs = {"mm": NodeCost(900, 0, True), "add": NodeCost(100, 0, True), "free": NodeCost(5, 0, True)}
    share = fp16_share(costs, fp16={"mm"}, fp32={"add"})
    assert share["flops_total"] == 1000 and share["fp16_flops_pct"] == 90.0


def test_search_reports_flops_share_and_casts_and_prefers_cheap_fp32():
    """The attention block with an overflowing MLP: the accuracy search must keep three more nodes in float32;
    of the candidates that pass with as few nodes, the result has the fewest float32 FLOPs."""
    result = fp16.auto_mixed_precision(
        attention_block(overflow=True), attention_feeds(), rtol=1e-2, atol=1e-3, progress=False
    )
    report = result.report
    cost = report.search["cost"]
    assert cost == report.cost
    assert cost["casts_inserted"] == report.casts_inserted > 0
    fp32 = {d.node for d in report.fp32_nodes}
    assert cost["fp16_nodes_pct"] == pytest.approx(100 * len(report.fp16_nodes) / len(report.decisions), abs=0.01)
    total = cost["flops_total"]
    assert 0 < cost["flops_fp16"] < total and cost["nodes_without_shape"] == 0
    assert cost["fp16_flops_pct"] == pytest.approx(100 * cost["flops_fp16"] / total, abs=0.01)
    history = [h for h in report.search["history"] if h["stage"] != "holdout" and h.get("nodes_fp32") is not None]
    passing = [h for h in history if h["passed"]]
    final = next(h for h in report.search["history"] if h["stage"] == "holdout")
    assert final["nodes_fp32"] == len(fp32) == min(h["nodes_fp32"] for h in passing)
    assert final["flops_fp32"] == min(h["flops_fp32"] for h in passing if h["nodes_fp32"] == len(fp32))
    summary = json.loads(report.to_json())["summary"]
    assert summary["fp16_flops_pct"] == cost["fp16_flops_pct"] and summary["fp16_nodes_pct"] == cost["fp16_nodes_pct"]
    assert f"{cost['fp16_flops_pct']:g}% of estimated FLOPs" in report.summary()
