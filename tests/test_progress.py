"""`olive-fp16 amp` shows its progress with or without tqdm: plain lines on stderr when tqdm cannot be imported."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx

from olive_fp16_pass.progress import PlainProgress, progress_bar
from tests.models import benign_mlp

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# `import tqdm` raises ImportError in this interpreter, as where tqdm is not installed.
WITHOUT_TQDM = (
    "import sys; sys.modules['tqdm'] = None; from olive_fp16_pass.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_plain_progress_prints_at_powers_of_two_and_at_the_end():
    stream = io.StringIO()
    bar = PlainProgress("mixed precision search", "candidate", stream)
    for _ in range(11):
        bar.update(1)
    bar.close()
    bar.close()  # once only
    counts = [
        re.match(r"mixed precision search: (\d+) candidates?(, done)? \(\d+\.\d s\)$", line)
        for line in stream.getvalue().splitlines()
    ]
    assert all(counts), stream.getvalue()
    assert [(int(m.group(1)), bool(m.group(2))) for m in counts] == [
        (1, False),
        (2, False),
        (4, False),
        (8, False),
        (11, True),
    ]
    assert "\r" not in stream.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_tqdm_on_a_terminal_and_silent_when_disabled(capsys):
    from tqdm import tqdm

    terminal = _Terminal()
    bar = progress_bar("search", "candidate", stream=terminal)
    assert isinstance(bar, tqdm)
    bar.update(1)
    bar.close()
    assert "search" in terminal.getvalue()
    capsys.readouterr()
    silent = progress_bar("search", "candidate", enabled=False)
    silent.update(3)
    silent.close()
    assert capsys.readouterr() == ("", "")


def test_progress_bar_prints_plain_lines_where_the_stream_is_no_terminal():
    """tqdm wrote its redraws, `\r`-separated, into CI logs and Olive's log files: off a terminal, plain lines."""
    log = io.StringIO()
    bar = progress_bar("mixed precision search", "candidate", stream=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines()[-1].startswith("mixed precision search: 5 candidates, done")


def test_amp_with_tqdm_into_a_log_has_no_carriage_returns(tmp_path):
    """The real thing: `olive-fp16 amp` with tqdm installed and stderr redirected, as in CI."""
    proc = _amp(tmp_path, with_tqdm=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\r" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"mixed precision search: \d+ candidates?, done", proc.stderr), proc.stderr[-2000:]


def _amp(tmp_path: Path, *extra: str, with_tqdm: bool = False) -> subprocess.CompletedProcess:
    model = tmp_path / "mlp.onnx"
    onnx.save(benign_mlp(), model)
    args = [
        "amp",
        model,
        "-o",
        tmp_path / "out.onnx",
        "--random",
        "8",
        "--shape",
        "x:2x32",
        "--provider",
        "CPUExecutionProvider",
        *extra,
    ]
    command = ["-m", "olive_fp16_pass.cli"] if with_tqdm else ["-c", WITHOUT_TQDM]
    return subprocess.run(
        [sys.executable, *command, *map(str, args)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_amp_without_tqdm_prints_plain_progress_lines(tmp_path):
    proc = _amp(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert any(re.fullmatch(r"mixed precision search: 1 candidate \(\d+\.\d s\)", line) for line in lines), lines
    assert any(re.fullmatch(r"mixed precision search: \d+ candidates?, done \(\d+\.\d s\)", line) for line in lines)
    assert "Traceback" not in proc.stderr and (tmp_path / "out.onnx").is_file()


def test_amp_without_tqdm_and_no_progress_prints_no_progress(tmp_path):
    proc = _amp(tmp_path, "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mixed precision search:" not in proc.stderr
