"""What a user installs and sources: the core without Olive or torch, the setup script, files the README names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the checks below read pyproject.toml

REPO = Path(__file__).resolve().parent.parent

# Runs the core in a process where `olive` and `torch` cannot be imported, as in an install without them.
WITHOUT_OLIVE = r"""
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("olive", "torch"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    if name.split(".")[0] in ("olive", "torch"):
        del sys.modules[name]

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import olive_fp16_pass as fp16

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
result = fp16.convert_float16(model)
assert result.model.graph.initializer[0].data_type == TensorProto.FLOAT16
feeds = [{"x": np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32)} for i in range(8)]
amp = fp16.auto_mixed_precision(model, feeds, rtol=1e-2, atol=1e-3, progress=False)
assert amp.report.search["criteria_met"]
assert not any(name.split(".")[0] in ("olive", "torch") for name in sys.modules)
print("core ok without olive and torch")
"""


def test_core_converts_and_searches_without_olive_or_torch():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_OLIVE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "core ok without olive and torch" in proc.stdout


def test_core_cli_convert_without_olive_or_torch(tmp_path):
    """`olive-fp16 convert` is core: it must work where the `olive` extra is not installed."""
    code = WITHOUT_OLIVE.split("import numpy as np")[0] + (
        "import onnx\nfrom onnx import TensorProto, helper\n"
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])\n"
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])\n"
        f"onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)], ir_version=10), "
        f"{str(tmp_path / 'm.onnx')!r})\n"
        "from olive_fp16_pass.cli import main\n"
        f"sys.exit(main(['convert', {str(tmp_path / 'm.onnx')!r}, '-o', {str(tmp_path / 'o.onnx')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "o.onnx").is_file()


def test_olive_and_torch_are_an_extra_that_the_readme_installs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("olive", "torch", "scikit-image", "pydantic"):
        assert heavy not in core, f"{heavy} is a core dependency; the Python API promises no Olive"
    assert any(req.startswith("olive-ai") for req in project["optional-dependencies"]["olive"])
    readme = (REPO / "README.md").read_text()
    installs = re.findall(r'pip install -e "\.\[([^\]]+)\]"', readme)
    assert {"olive,gpu", "olive,cpu"} <= set(installs)  # the README's commands install the Olive extra
    for script in ("scripts/test.sh", "scripts/run_denoise.sh"):
        assert re.search(r"setup_env\.sh \"olive,", (REPO / script).read_text()), script


def _fake_venv(root: Path, *, fail_install: bool) -> Path:
    """A venv stand-in whose python records the calls (no network, no install) and whose activate sets
    VIRTUAL_ENV: enough to run scripts/setup_env.sh for real in a bash shell."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{root}/calls.log"\n'
        + ('case "$*" in *"pip install -q -e"*) exit 7;; esac\n' if fail_install else "")
        + "exit 0\n"
    )
    python.chmod(0o755)
    (bin_dir / "activate").write_text(f"export VIRTUAL_ENV={root}\n")
    return root


SHOW_OPTIONS = 'echo "rc=$? venv=${VIRTUAL_ENV:-}"; set -o | grep -E "^(errexit|nounset|pipefail)"'


@pytest.mark.parametrize("fail_install", [False, True])
def test_sourcing_setup_env_keeps_the_callers_shell_options(tmp_path, fail_install):
    venv = _fake_venv(tmp_path / "venv", fail_install=fail_install)
    proc = subprocess.run(
        ["bash", "-c", f"source scripts/setup_env.sh olive,cpu; {SHOW_OPTIONS}"],
        cwd=REPO,
        # the user's shell is outside any venv (the test itself may run in an activated one, as CI does)
        env={**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    options = dict(line.split() for line in proc.stdout.splitlines() if not line.startswith("rc="))
    assert options == {"errexit": "off", "nounset": "off", "pipefail": "off"}  # the user's shell survives
    calls = (venv / "calls.log").read_text()
    assert "-m pip install -q -e .[olive,cpu]" in calls
    assert "uninstall -q -y onnxruntime-gpu" in calls
    status = proc.stdout.splitlines()[0]
    if fail_install:
        assert status == "rc=1 venv=" and "installation failed" in proc.stderr  # not activated, says so
    else:
        assert status == f"rc=0 venv={venv}"


def test_run_script_stops_when_setup_fails(tmp_path):
    """scripts/run_denoise.sh (set -e) must stop at a failed installation, not run the workflow."""
    venv = _fake_venv(tmp_path / "venv", fail_install=True)
    proc = subprocess.run(
        ["bash", "scripts/run_denoise.sh"],
        cwd=REPO,
        env={**os.environ, "VENV": str(venv), "PATH": f"{venv}/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "provider_status" not in (venv / "calls.log").read_text()  # stopped before choosing a workflow


def _repository_files() -> set[str]:
    """Every file the repository holds (tracked, or new and not ignored), relative, with its parent folders."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if listed.returncode == 0 and listed.stdout.strip():
        files = set(listed.stdout.split())
    else:  # not a git checkout (an unpacked sdist): the files on disk
        files = {str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts}
    folders = {str(Path(f).parents[k]) for f in files for k in range(len(Path(f).parts) - 1)}
    return files | folders


# Paths the README names that are not files of this repository, each for a reason: what a run writes (outputs,
# caches, build folders), a user's own files in the examples, and files of other projects (Olive's sources,
# onnxruntime's docs, GitHub actions, NVIDIA's image).
GENERATED_OR_EXTERNAL_FOLDERS = {"outputs", "cache", "build", "wheels", "gpu_results", "feeds", "output_dir"}
GENERATED_OR_EXTERNAL_FOLDERS |= {"olive", "docs", "actions", "nvidia"}
GENERATED_OR_EXTERNAL_FOLDERS |= {"EDIT_ME"}  # the BYOM templates' placeholders, replaced by the README's sed
USER_OR_GENERATED_FILES = {
    "model.onnx", "model.onnx.data", "model_fp16.onnx", "model_amp.onnx", "feeds.npz", "my_workflow.json",
    "report.json", "report.md", "amp.json", "compare.json", "comparison.png", "footprint.json",
    "model.fp16_report.json", "olive_fp16_package_config.json", "pipeline_result.json",
    "olive_fp16_pass_autoregister.pth",  # the name the wheel installs olive_fp16_pass/_olive_autoregister.pth as
    "optimize.py",  # Olive's olive/cli/optimize.py
    "torch.onnx",  # the PyTorch module, not a file
}  # fmt: skip
PATH_TOKEN = re.compile(
    r"(?<![\w/.$:-])((?:[A-Za-z_][\w.-]*/)+[\w.*-]*|[\w-]+(?:\.[\w-]+)*\.(?:py|json|sh|md|onnx|pt|toml|txt|ya?ml|npz|png|pth|data))"
    r"(?![\w/])"
)


def readme_paths(text: str, top_level: set[str]) -> set[str]:
    """Relative paths in the README's code (inline `code` and fenced blocks) and relative link targets.

    A token with slashes is a path when it ends with a file extension or a slash, or starts with a folder of the
    repository or one of GENERATED_OR_EXTERNAL_FOLDERS (so `NaN/Inf` or `op/node` in the layout tree are words)."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    code = [*fenced, *re.findall(r"`([^`\n]+)`", prose)]
    tokens = {m for chunk in code for m in PATH_TOKEN.findall(chunk)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    tokens |= {link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)}
    paths = set()
    for token in tokens:
        path = token.rstrip("/")
        if not path or "*" in path:
            continue
        first = path.split("/")[0]
        if (
            "/" not in path
            or token.endswith("/")
            or re.search(r"\.[A-Za-z]\w*$", path)
            or first in top_level | GENERATED_OR_EXTERNAL_FOLDERS
        ):
            paths.add(path)
    return paths


def test_readme_names_only_files_the_repository_holds():
    readme = (REPO / "README.md").read_text()
    holds = _repository_files()
    top_level = {Path(f).parts[0] for f in holds}
    named = readme_paths(readme, top_level)
    assert {"scripts/setup_env.sh", "docker/Dockerfile", "classify.py", "olive_fp16_pass/showcase/models"} <= named
    basenames = {Path(f).name for f in holds}
    missing = []
    for path in sorted(named):
        if path.split("/")[0] in GENERATED_OR_EXTERNAL_FOLDERS:
            continue
        if path in holds:
            continue
        if "/" in path:
            # relative to a folder of the layout tree (`data/cuda_kernels.json` under olive_fp16_pass/)
            if not any(f.endswith("/" + path) for f in holds):
                missing.append(path)
        elif path not in basenames and path not in USER_OR_GENERATED_FILES:
            missing.append(path)  # a bare name (the layout tree, a file named in passing) must be one of ours
    assert missing == [], f"the README names files the repository does not hold: {missing}"


def test_readme_path_check_can_fail():
    text = "Run `bench/missing.py`, see [the notes](notes/NOTES.md), `gone_module.py` and `NaN/Inf` or `op/node`."
    assert readme_paths(text, {"bench"}) == {"bench/missing.py", "notes/NOTES.md", "gone_module.py"}


def test_license_is_the_one_pyproject_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_readme_ci_job_installs_the_olive_extra_its_pipeline_needs():
    """The README's GitHub Actions job runs examples/pipeline.py, which runs `olive run`: its install step must
    bring Olive (the core extra alone does not), and since every `run:` step is a new shell, a venv made by
    scripts/setup_env.sh must be used by path, not through an activation of an earlier step."""
    readme = (REPO / "README.md").read_text()
    job = re.search(r"^```yaml\n(.*?)^```", readme, re.MULTILINE | re.DOTALL).group(1)
    steps = re.findall(r"- run: (.*)", job)
    pipeline = next(k for k, step in enumerate(steps) if "examples/pipeline.py" in step)
    installs = [k for k, step in enumerate(steps[:pipeline]) if "setup_env.sh olive," in step or ".[olive," in step]
    assert installs, f"no step before the pipeline installs the olive extra: {steps[:pipeline]}"
    if "setup_env.sh" in steps[installs[-1]]:
        assert steps[pipeline].startswith(".venv/bin/python "), steps[pipeline]


def test_package_config_without_olive_is_a_clear_error(tmp_path):
    """`olive-fp16 package-config` in a core install (`.[cpu]`): exit 2 naming the missing extra, no traceback;
    and an unwritable -o is exit 2 naming it."""
    target = tmp_path / "pc.json"
    code = WITHOUT_OLIVE.split("import numpy as np")[0] + (
        f"from olive_fp16_pass.cli import main\nsys.exit(main(['package-config', '-o', {str(target)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Olive is not installed" in proc.stderr and ".[olive,cpu]" in proc.stderr
    assert "Traceback" not in proc.stderr and not target.exists()
    pytest.importorskip("olive")
    blocked = tmp_path / "file"
    blocked.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "olive_fp16_pass.cli", "package-config", "-o", str(blocked / "pc.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "package-config -o" in proc.stderr and "Traceback" not in proc.stderr
