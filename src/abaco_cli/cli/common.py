"""What several commands share: global state, error handling, option parsing."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer

from abaco_cli.cli import console
from abaco_cli.errors import AbacoError, ExitCode, UsageError
from abaco_cli.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppState:
    """Global options from the root callback, applied when a command builds its settings."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False

    def settings(self, **more: Any) -> Settings:
        return load_settings(self.config_file, **{**self.overrides, **more})


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    if isinstance(obj, AppState):
        return obj
    fresh = AppState()
    ctx.find_root().obj = fresh
    return fresh


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn abaco errors into one line on stderr and their exit code; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = any(isinstance(a, AppState) and a.debug for a in args) or "--debug" in sys.argv
        try:
            return func(*args, **kwargs)
        except AbacoError as exc:
            if debug:
                logging.getLogger("abaco").exception("failed")
            console.error(exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            console.stderr.print("abaco: interrupted; nothing half-written was published")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def parse_as_of(text: str | None) -> date:
    """--as-of: an ISO date (YYYY-MM-DD); yesterday (UTC) when not given."""
    if text is None:
        return datetime.now(UTC).date() - timedelta(days=1)
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--as-of {text!r} is not a date; use YYYY-MM-DD, e.g. 2025-06-30"
        ) from None


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
