"""The one place that owns terminal output: consoles, log lines, progress and tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

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

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("abaco")
_debug = False
_redactor = Redactor()  # replaced by the configuration's once settings are loaded


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
    global _debug
    _debug = debug
    handler = logging.StreamHandler(sys.stderr)
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
    hint = f" [dim](hint: {escape(exc.hint)})[/]" if exc.hint else ""
    stderr.print(f"[bold red]abaco: error:[/] {escape(exc.message)}{hint}", highlight=False)


def error_line(message: str) -> None:
    """One line on stderr for an error that is not one of abaco's (usage, interrupt, bug)."""
    stderr.print(f"[bold red]abaco: error:[/] {escape(message)}", highlight=False)


def emit_json(payload: Any) -> None:
    """The machine-readable result: only this goes to stdout under --json."""
    safe = _redactor.value(json.loads(json.dumps(payload, allow_nan=False, default=str)))
    sys.stdout.write(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


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
    sys.stdout.write("\t".join(columns) + "\n")
    for row in rows:
        sys.stdout.write("\t".join(str(v) for v in row) + "\n")
    sys.stdout.flush()


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
