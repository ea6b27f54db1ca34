"""Progress of long steps, readable where it lands: a live bar on a terminal, plain lines in a log.

Off a terminal (CI logs, ``| tee``) a live bar shows nothing until it ends, and a table column
cuts its text to the console's width. So there every update becomes one complete line on stderr
(``bench: batch 1, load 2/4, rounds 40/100 (12 s)``), written when the stage changes, at most
every few seconds in between, and at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as LiveBar

from psdeploy.console import err_console

EVERY_S = 5.0  # a plain line at least this far apart, unless the stage changes


class Progress:
    """One long step: ``update(done, stage=..., detail=...)`` as it goes; a context manager around it."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", *, transient: bool = True,
                 console: Console = err_console, every_s: float = EVERY_S) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done, self.stage, self.detail = 0, "", ""
        self._console = console
        self._bar: LiveBar | None = None
        self._task = None
        self._started = self._printed_at = 0.0
        self._printed: tuple | None = None  # the state last written as a line
        self._transient = transient

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        if self._console.is_terminal:
            self._bar = LiveBar(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                                TextColumn(self.unit), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                console=self._console, transient=self._transient)
            self._bar.start()
            self._task = self._bar.add_task(escape(self.label), total=self.total, detail="")
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif kind is None and self._state() != self._printed:
            self._write()  # where it ended, if that line is not out yet

    def update(self, done: int | None = None, *, total: int | None = None, stage: str | None = None,
               detail: str | None = None) -> None:
        """Anything not given stays as it was."""
        stage_changed = stage is not None and stage != self.stage
        self.done = self.done if done is None else done
        self.total = self.total if total is None else total
        self.stage = self.stage if stage is None else stage
        self.detail = self.detail if detail is None else detail
        if self._bar is not None:
            description = escape(f"{self.label}: {self.stage}" if self.stage else self.label)
            self._bar.update(self._task, completed=self.done, total=self.total, description=description,
                             detail=escape(self.detail))
            return
        finished = self.total is not None and self.done >= self.total
        if stage_changed or finished or time.perf_counter() - self._printed_at >= self.every_s:
            if self._state() != self._printed:
                self._write()

    def line(self) -> str:
        """The plain line of the current state: every part whole."""
        count = f"{self.unit} {self.done}/{self.total}" if self.total is not None else f"{self.done} {self.unit}"
        parts = [p for p in (self.stage, count.strip(), self.detail) if p]
        return f"{self.label}: {', '.join(parts)} ({time.perf_counter() - self._started:.0f} s)"

    def _state(self) -> tuple:
        return self.stage, self.done, self.total, self.detail

    def _write(self) -> None:
        self._console.out(self.line(), highlight=False)
        self._printed, self._printed_at = self._state(), time.perf_counter()


@contextlib.contextmanager
def stage(text: str, console: Console = err_console) -> Iterator[None]:
    """A step with no count: a spinner on a terminal, one plain line off it."""
    if console.is_terminal:
        with console.status(escape(text)):
            yield
    else:
        console.out(text, highlight=False)
        yield
