"""What several commands share: global state, the run of a command, option parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import typer

from abaco_cli.cli import console
from abaco_cli.dates import check_as_of, default_as_of, parse_date
from abaco_cli.redaction import Redactor
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings, load_settings


@dataclass
class AppState:
    """Global options from the root callback, applied when a command builds its settings."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False

    def settings(self, **more: Any) -> Settings:
        loaded = load_settings(self.config_file, **{**self.overrides, **more})
        console.use_redactor(Redactor.from_settings(loaded))
        return loaded

    def run(self, command: str, settings: Settings | None = None) -> Run:
        """The Run of this command (made once; services receive it)."""
        return Run(settings if settings is not None else self.settings(), command)


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    if isinstance(obj, AppState):
        return obj
    fresh = AppState()
    ctx.find_root().obj = fresh
    return fresh


def parse_as_of(text: str | None, settings: Settings, *, allow_future: bool = False) -> date:
    """--as-of: an ISO date no later than yesterday in the business time zone (the default)."""
    if text is None:
        return default_as_of(settings)
    return check_as_of(parse_date(text, "--as-of"), "--as-of", settings, allow_future=allow_future)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
