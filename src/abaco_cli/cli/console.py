"""The one place that owns terminal output: consoles, log lines, progress and tables.

A reader that goes away (`abaco audit list | head -1`) is not a failure of the job: the first
write that meets the closed pipe points the stream at /dev/null, nothing more is written to it,
no error is reported, and the command ends with its own exit code (0 when the job succeeded).
Errors are one line on stderr, a JSON object under `--log-format json`; with `--json` a failed
command also prints `{"ok": false, "exit_code": N, "error": ..., "hint": ...}` on stdout.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO, cast

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from abaco_cli.errors import AbacoError
from abaco_cli.redaction import Redactor


class _Stream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` as they are at each write (test runners swap them),
    where a reader that went away ends the output quietly instead of failing the job."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.gone = False  # the reader closed the pipe: the rest is discarded

    @property
    def target(self) -> TextIO:
        stream: TextIO = getattr(sys, self.name)
        return stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.target.write(text)
            except BrokenPipeError:
                self.reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.target.flush()
            except BrokenPipeError:
                self.reader_gone()

    def isatty(self) -> bool:
        try:
            return self.target.isatty()
        except (ValueError, OSError):
            return False

    def fileno(self) -> int:
        return self.target.fileno()

    def reader_gone(self) -> None:
        """Point the descriptor at /dev/null: what is still buffered, and anything written
        later (help text, the interpreter's last flush), goes nowhere and fails nothing."""
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.target.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass

    def reader_closed(self) -> bool:
        """Has the reader of this pipe gone away (the write end reports an error)?"""
        if self.gone:
            return True
        try:
            poller = select.poll()
            poller.register(self.target.fileno(), select.POLLOUT)
            return any(event & select.POLLERR for _, event in poller.poll(0))
        except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
            return False


_out = _Stream("stdout")
_err = _Stream("stderr")
stdout = Console(file=cast(TextIO, _out), soft_wrap=True)
stderr = Console(file=cast(TextIO, _err), stderr=True, soft_wrap=True)
log = logging.getLogger("abaco")
_debug = False
_log_format = "plain"
_json_result = False  # --json was given: a failure is a JSON object on stdout too
_redactor = Redactor()  # replaced by the configuration's once settings are loaded


def _identity(target: int | str) -> tuple[int, int, int] | None:
    """What a descriptor (or path) is: device, inode, and the device it stands for."""
    try:
        found = os.stat(target)
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_rdev)


_stdout_at_start = _identity(1)


def begin(*, log_format: str, json_result: bool) -> None:
    """A new command line: how it wants its errors (before its options are parsed, so that
    even a usage error is in the format asked for)."""
    global _log_format, _json_result, _stdout_at_start
    _log_format = log_format
    _json_result = json_result
    _out.gone = _err.gone = False
    _stdout_at_start = _identity(1)


def stdout_closed() -> bool:
    """The reader of stdout went away (``| head``): not an error of the job. Also true when
    a console of Typer's own (its help) met the closed pipe: rich then points the descriptor at
    /dev/null and raises SystemExit(1)."""
    if _out.reader_closed():
        return True
    now = _identity(1)
    return now is not None and now != _stdout_at_start and now == _identity(os.devnull)


def discard_stdout() -> None:
    """Send the rest of stdout to /dev/null (its reader is gone)."""
    _out.reader_gone()


def use_redactor(redactor: Redactor) -> None:
    """Redact the secrets of this configuration from every log line and JSON result."""
    global _redactor
    _redactor = redactor


def current_redactor() -> Redactor:
    return _redactor


class _RedactingFilter(logging.Filter):
    """Log lines pass the one Redactor before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redactor.text(record.getMessage())
        record.args = ()
        return True


def debug_enabled() -> bool:
    """--debug was given: errors show their traceback."""
    return _debug


def interactive() -> bool:
    """True when a person watches stderr (rich progress); False under cron, systemd, pipes."""
    return stderr.is_terminal


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(payload)


def setup_logging(log_format: str, *, debug: bool = False) -> None:
    """Log lines on stderr: plain text, or one JSON object a line for machines."""
    global _debug, _log_format
    _debug = debug
    _log_format = log_format
    handler = logging.StreamHandler(_err)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"
            )
        )
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("psycopg").setLevel(logging.WARNING)


def error(exc: AbacoError) -> None:
    """One line on stderr: what went wrong and, after it, what to do next."""
    error_line(exc.message, hint=exc.hint, exit_code=int(exc.exit_code))


def error_line(message: str, *, hint: str = "", exit_code: int = 1) -> None:
    """One error line on stderr (a JSON object under --log-format json); ``exit_code`` is
    the code the command ends with."""
    message, hint = _redactor.text(message), _redactor.text(hint)
    if _log_format == "json":
        payload = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "error",
            "logger": "abaco",
            "message": message,
            "hint": hint or None,
            "exit_code": exit_code,
        }
        _err.write(json.dumps(payload) + "\n")
        _err.flush()
        return
    shown = f" [dim](hint: {escape(hint)})[/]" if hint else ""
    stderr.print(f"[bold red]abaco: error:[/] {escape(message)}{shown}", highlight=False)


def failed(message: str, *, hint: str = "", exit_code: int) -> None:
    """The command failed: its error line, and under --json the failure as the result."""
    error_line(message, hint=hint, exit_code=exit_code)
    if _json_result:
        emit_json({"ok": False, "exit_code": exit_code, "error": message, "hint": hint or None})


def emit_json(payload: Any) -> None:
    """The machine-readable result: only this goes to stdout under --json."""
    safe = _redactor.value(json.loads(json.dumps(payload, allow_nan=False, default=str)))
    _out.write(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    _out.flush()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; tab-separated lines elsewhere (easy to grep and cut)."""
    if stdout.is_terminal:
        grid = Table(title=title, title_justify="left")
        for column in columns:
            grid.add_column(column)
        for row in rows:
            grid.add_row(*(str(v) for v in row))
        stdout.print(grid)
        return
    _out.write("\t".join(columns) + "\n")
    for row in rows:
        _out.write("\t".join(str(v) for v in row) + "\n")
    _out.flush()


def info(message: str) -> None:
    """A status line on stderr: styled on a terminal, a log line elsewhere."""
    if interactive():
        stderr.print(message, highlight=False)
    else:
        log.info(message)


@contextmanager
def progress_bar(total: int | None = None) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; None elsewhere (callers then log instead)."""
    if not interactive():
        yield None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns += [TextColumn("{task.fields[detail]}")]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        yield bar
