"""Every repository path the benchmarks, workflows, scripts and README name exists.

A file moved in a restructuring (the denoiser went to olive_fp16_pass/showcase/models/) left
bench/amp_models.py pointing at its old place: `python bench/amp_speed.py` then failed at its first model.
This reads the path literals, both "a/b/c.onnx" and `ROOT / "a" / "c.onnx"` forms, and checks each one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    *sorted((ROOT / "bench").glob("*.py")),
    *sorted((ROOT / "bench").glob("*.sh")),
    *sorted((ROOT / "workflows").glob("*.py")),
    *sorted((ROOT / "workflows").glob("*.json")),
    *sorted((ROOT / "scripts").glob("*")),
    *sorted((ROOT / "docker").glob("*")),
    ROOT / "README.md",
    ROOT / "pyproject.toml",
]
# Repository-relative files with a suffix worth checking (models, data, code, configs).
SLASHED = re.compile(
    r"\b((?:olive_fp16_pass|tests/data|workflows|bench|scripts|docker)/[\w./-]*\.(?:onnx|pt|py|json|sh|md))\b"
)
JOINED = re.compile(r'(?:ROOT|REPO|REPO_ROOT)\s*((?:/\s*"[\w.-]+"\s*)+)')
# Names that are outputs or installed names, not repository files.
NOT_FILES = {"olive_fp16_pass_autoregister.pth"}


def _named_paths(text: str) -> set[str]:
    found = {m.group(1) for m in SLASHED.finditer(text)}
    for match in JOINED.finditer(text):
        parts = re.findall(r'"([\w.-]+)"', match.group(1))
        if parts and "." in parts[-1]:  # a file, not a folder another line completes
            found.add("/".join(parts))
    # "<model>" and "NAME" are placeholders in usage lines
    return {p for p in found if Path(p).name not in NOT_FILES and "<" not in p and not Path(p).stem.isupper()}


@pytest.mark.parametrize("source", [s for s in SOURCES if s.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_named_repository_paths_exist(source: Path) -> None:
    text = source.read_text(errors="replace")
    missing = sorted(p for p in _named_paths(text) if not (ROOT / p).exists() and not (ROOT / p).is_symlink())
    assert not missing, f"{source.relative_to(ROOT)} names paths that do not exist: {missing}"
