"""Ctrl-C and SIGTERM: stop the run cleanly, except while it publishes.

While a command runs, SIGINT (Ctrl-C) and SIGTERM (systemd stopping a unit, `timeout`) raise
InterruptedRun in the main thread, so that the run cleans up and is audited as interrupted.
Inside ``deferred()`` (the publish step: a journal, renames, manifests, pointers; short) a
signal is only remembered; it is raised when the block ends, after the publish is complete.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from abaco_cli.errors import InterruptedRun

log = logging.getLogger("abaco")
_HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """The signal handlers of one run."""

    def __init__(self) -> None:
        self.pending: str | None = None
        self._deferring = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferring:
            if self.pending is None:
                log.warning("%s received while publishing: finishing the publish first", name)
            self.pending = self.pending or name
            return
        raise InterruptedRun(name)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM within the block (main thread only; restored after)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in _HANDLED}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Remember signals instead of raising them; raise the first one when the block ends
        (unless the block itself failed)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self.pending is not None:
            name, self.pending = self.pending, None
            raise InterruptedRun(name)

    @contextmanager
    def ignored(self) -> Iterator[None]:
        """The end of a run (its last audit record): a signal now is remembered and dropped."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring:
                self.pending = None
