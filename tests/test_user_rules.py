"""The public rule API (issue 10.4): a user's rule keeps nodes in float32 with its own reason, reported like ours,
through convert_float16, auto_mixed_precision, the Olive pass (import paths) and the command line; the README's
example is run here as it is written."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import olive_fp16_pass as fp16
from olive_fp16_pass.errors import Float16Error, OptionError
from olive_fp16_pass.options import ConversionOptions
from olive_fp16_pass.precision_plan import Rule
from tests.helpers import init, make_model, run_cli, vi
from tests.models import matmul_activation_overflow

REPO = Path(__file__).resolve().parent.parent
README_MARKER = "<!-- example: extra_rules"


def keep_matmul(node, context):
    """A rule importable as 'tests.test_user_rules:keep_matmul' (the Olive pass and CLI form)."""
    return f"MatMul kept by the user at opset {context.opset}" if node.op_type == "MatMul" else None


@dataclass
class KeepOps:
    """An object rule that is not hashable (a dataclass with eq): options holding it must stay hashable."""

    ops: tuple[str, ...]
    name: str = "keep_ops"

    def decide(self, node, context):
        return f"{node.op_type} is in {list(self.ops)}" if node.op_type in self.ops else None


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(README_MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "the README's extra_rules example lost its code block"
    return match.group(1)


def _softmax_model() -> onnx.ModelProto:
    """A Softmax over 2048 values, one over 16, and a node named 'head'."""
    return make_model(
        [
            helper.make_node("Softmax", ["x"], ["p"], name="long_softmax"),
            helper.make_node("Softmax", ["s"], ["q"], name="short_softmax"),
            helper.make_node("Mul", ["q", "w"], ["y"], name="head"),
            helper.make_node("Relu", ["p"], ["z"], name="relu"),
        ],
        [vi("x", TensorProto.FLOAT, ["b", 2048]), vi("s", TensorProto.FLOAT, ["b", 16])],
        [vi("y", TensorProto.FLOAT, ["b", 16]), vi("z", TensorProto.FLOAT, ["b", 2048])],
        [init("w", np.full(16, 2.0, np.float32))],
    )


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    onnx.save(_softmax_model(), tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_readme_example(), "README.md (extra_rules example)", "exec"), namespace)
    report = namespace["result"].report
    rows = {d["node"]: d for d in report.to_dict()["fp32_nodes"]}
    assert set(rows) == {"long_softmax", "head"}
    assert rows["long_softmax"]["rule"] == "keep_long_softmax" and rows["long_softmax"]["detail"] == (
        "softmax over 2048 values"
    )
    assert rows["head"]["rule"] == "keep_named" and rows["head"]["origin"] == "extra_rules"
    assert report.reasons() == {"keep_long_softmax": 1, "keep_named": 1}
    assert "long_softmax keep_long_softmax softmax over 2048 values" in printed.getvalue()
    assert report.options["extra_rules"] == ["keep_long_softmax", "keep_named"]


def test_a_rule_never_overrides_the_rules_before_it_and_wins_over_those_after():
    model = matmul_activation_overflow()
    both = fp16.convert_float16(model, provider=None, node_block_list=["mm"], extra_rules=[keep_matmul])
    assert {d.node: d.rule for d in both.report.fp32_nodes} == {"mm": Rule.NODE_BLOCK_LIST}  # the user's list first
    deep = fp16.convert_float16(model, provider=None, max_reduction_elements=8, extra_rules=[keep_matmul])
    assert {d.node: d.rule.value for d in deep.report.fp32_nodes} == {"mm": "keep_matmul"}


def test_object_rules_and_auto_mixed_precision():
    model = matmul_activation_overflow()
    rule = KeepOps(("Relu",))
    options = ConversionOptions(extra_rules=[rule])
    assert hash(options) == hash(ConversionOptions(extra_rules=[rule])) and options.extra_rules[0].name == "keep_ops"
    feeds = [{"x": np.ones((1, 2, 64), np.float32)} for _ in range(3)]
    result = fp16.auto_mixed_precision(
        model, feeds, provider="CPUExecutionProvider", progress=False, extra_rules=[rule, keep_matmul]
    )
    kept = {d.node: (d.rule.value, d.detail) for d in result.report.fp32_nodes}
    assert kept == {
        "relu": ("keep_ops", "Relu is in ['Relu']"),
        "mm": ("keep_matmul", "MatMul kept by the user at opset 17"),
    }
    assert result.report.search["criteria_met"]


def test_olive_pass_takes_rules_as_import_paths(tmp_path):
    from olive.model import ONNXModelHandler
    from olive.passes.olive_pass import create_pass_from_dict

    from olive_fp16_pass.olive.float16_pass import OnnxFloat16

    source = tmp_path / "m.onnx"
    onnx.save(matmul_activation_overflow(), source)
    olive_pass = create_pass_from_dict(
        OnnxFloat16, {"extra_rules": ["tests.test_user_rules:keep_matmul"]}, disable_search=True
    )
    output = olive_pass.run(ONNXModelHandler(model_path=str(source)), str(tmp_path / "out.onnx"))
    report = output.model_attributes["olive_fp16_report"]
    assert [(d["node"], d["rule"]) for d in report["fp32_nodes"]] == [("mm", "keep_matmul")]
    assert report["options"]["extra_rules"] == ["tests.test_user_rules:keep_matmul"]


def test_cli_takes_rules_as_import_paths(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(matmul_activation_overflow(), model)
    command = ["convert", model, "-o", tmp_path / "o.onnx"]
    report = tmp_path / "r.json"
    proc = run_cli(*command, "--extra-rules", "tests.test_user_rules.keep_matmul", "--report", report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "float32 because keep_matmul: 1" in proc.stdout
    assert json.loads(report.read_text())["fp32_nodes"][0]["rule"] == "keep_matmul"
    bad = run_cli(*command[:-1], tmp_path / "bad.onnx", "--extra-rules", "tests.no_such_module:rule")
    assert bad.returncode == 2 and "cannot import 'tests.no_such_module'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad.onnx").exists()


class _Unnamed:
    name = 42

    def decide(self, node, context):
        return None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (keep_matmul, "expected a list of rules, got a single one"),
        (["no_colon_or_dot"], "is not an import path"),
        (["tests.test_user_rules:nothing_here"], "has no attribute 'nothing_here'"),
        ([42], "is neither a function"),
        ([_Unnamed()], "needs a name"),
        ([lambda node, context: None], "needs a name"),  # '<lambda>' is no name a report can show
        ([KeepOps(("Relu",), name="converted")], "name of a built-in rule"),
        ([keep_matmul, keep_matmul], "two rules are named 'keep_matmul'"),
    ],
)
def test_bad_rules_are_one_clear_option_error(rules, message):
    with pytest.raises(OptionError, match=message):
        fp16.convert_float16(matmul_activation_overflow(), extra_rules=rules)


def test_a_rule_that_fails_or_answers_nonsense_is_named_in_the_error():
    def broken(node, context):
        raise KeyError("oops")

    def yes(node, context):
        return True

    with pytest.raises(Float16Error, match=r"rule 'broken' failed on node 'mm': KeyError"):
        fp16.convert_float16(matmul_activation_overflow(), extra_rules=[broken])
    with pytest.raises(Float16Error, match=r"rule 'yes' answered True for node 'mm'"):
        fp16.convert_float16(matmul_activation_overflow(), extra_rules=[yes])


def test_user_rule_is_exported():
    assert "UserRule" in fp16.__all__
    named = fp16.UserRule(lambda node, context: "always" if node.op_type == "Div" else None, name="divs")
    result = fp16.convert_float16(matmul_activation_overflow(), provider=None, extra_rules=[named])
    assert [(d.node, d.rule.value) for d in result.report.fp32_nodes] == [("scale", "divs")]
