"""Progress of a long search: tqdm's bar on a terminal, plain lines on stderr elsewhere or without tqdm.

tqdm is a dependency of the core, but an install made with `--no-deps`, a vendored copy or a trimmed
container may lack it; `olive-fp16 amp` promises progress, so without tqdm it prints a line on stderr at the
1st, 2nd, 4th, 8th... step and one when it ends (a handful of lines whatever the count, and no carriage
returns in a CI log), instead of crashing on the import or saying nothing.

The same plain lines are printed when stderr is not a terminal (a CI log, a file Olive or a pipeline
redirects it to): tqdm redraws its bar with carriage returns, and such a log kept every redraw on one line of
`\r`-separated noise.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """Lines like `mixed precision search: 4 candidates (1.2 s)` on `stream`, at powers of two and at close."""

    def __init__(self, desc: str, unit: str, stream: TextIO | None = None) -> None:
        self.desc, self.unit = desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.next_line = 1
        self.start = time.perf_counter()
        self.closed = False

    def _say(self, suffix: str = "") -> None:
        plural = "" if self.count == 1 else "s"
        seconds = time.perf_counter() - self.start
        print(f"{self.desc}: {self.count} {self.unit}{plural}{suffix} ({seconds:.1f} s)", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self.next_line:
            self._say()
            while self.next_line <= self.count:
                self.next_line *= 2

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._say(", done")


def is_terminal(stream: TextIO) -> bool:
    """True where `stream` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(desc: str, unit: str, *, enabled: bool = True, stream: TextIO | None = None) -> Progress:
    """A tqdm bar (removed when done) on a terminal, else :class:`PlainProgress`; nothing when not enabled.

    `stream`: where progress goes, stderr by default."""
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if not is_terminal(stream):
        return PlainProgress(desc, unit, stream)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return PlainProgress(desc, unit, stream)
    return tqdm(desc=desc, unit=unit, leave=False, file=stream)
