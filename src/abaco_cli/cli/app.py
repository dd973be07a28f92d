"""The root of the `abaco` command line: global options, the command groups, and the one place
that turns every error into one line on stderr and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from abaco_cli import __version__
from abaco_cli.cli import audit, config, console, db, demo, export, health, kpi, prune
from abaco_cli.cli.common import AppState
from abaco_cli.cli.console import setup_logging
from abaco_cli.errors import AbacoError, ExitCode, InterruptedRun

log = logging.getLogger("abaco")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def run_guarded(call: Callable[[], Any]) -> int:
    """Run the command line and map whatever ends it to an exit code: usage errors (click's
    included), abaco's errors, interrupts and anything unexpected, each as one line on stderr
    (the traceback only with --debug)."""
    try:
        result = call()
    except typer.TyperException as exc:  # click's usage errors: a bad option, value, command
        if type(exc).__name__ == "NoArgsIsHelpError":
            console.stderr.print(exc.format_message(), highlight=False, markup=False)
            return int(ExitCode.USAGE)
        context = getattr(exc, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        console.error_line(f"{_one_line(exc.format_message())}{where}")
        return int(getattr(exc, "exit_code", ExitCode.USAGE))
    except typer.Abort:
        console.error_line("aborted")
        return int(ExitCode.FAILED)
    except AbacoError as exc:
        if console.debug_enabled():
            log.exception("failed")
        console.error(exc)
        return int(exc.exit_code)
    except InterruptedRun as exc:
        detail = exc.message or "nothing was published"
        console.error_line(f"interrupted by {exc.signal_name}: {detail}")
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        console.error_line("interrupted before anything was written")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if console.debug_enabled():
            log.exception("unexpected error")
        message = console.current_redactor().text(_one_line(str(exc)) or type(exc).__name__)
        console.error_line(
            f"unexpected {type(exc).__name__}: {message} (this is a bug in abaco; "
            "`abaco --debug ...` shows the traceback)"
        )
        return int(ExitCode.FAILED)
    if isinstance(result, int) and not isinstance(result, bool):
        if result == int(ExitCode.INTERRUPTED):
            console.error_line("interrupted before anything was written")
        return result
    return int(ExitCode.OK)


class AbacoGroup(TyperGroup):
    """The root group: its ``main`` runs the command line under ``run_guarded``, so that the
    real program and in-process test runners share one error mapping."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        code = run_guarded(
            lambda: super(AbacoGroup, self).main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        )
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="abaco",
    cls=AbacoGroup,
    help="Export ABACO's lending data (delinquency, KPIs, pricing, analytics) from PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.app, name="db")
app.add_typer(export.app, name="export")
app.add_typer(kpi.app, name="kpi")
app.add_typer(config.app, name="config")
app.command("demo")(demo.demo_command)
app.add_typer(audit.app, name="audit")
app.command("prune")(prune.prune_command)
app.command("healthcheck")(health.healthcheck_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"abaco {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Configuration file (default: $ABACO_CONFIG, else ./abaco.toml).",
            show_default=False,
        ),
    ] = None,
    runtime_dir: Annotated[
        Path | None,
        typer.Option(
            "--runtime-dir",
            help="Runtime tree (default: $ABACO_RUNTIME_DIR, else ./abaco_runtime).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Log lines on stderr: plain or json (default: plain).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """abaco: exact money, one snapshot per run, nothing ever half-written."""
    os.umask(0o027)
    overrides: dict[str, object] = {}
    if runtime_dir is not None:
        overrides["runtime_dir"] = runtime_dir
    if log_format is not None and log_format not in ("plain", "json"):
        raise typer.BadParameter("choose plain or json", param_hint="--log-format")
    ctx.obj = AppState(config_file=config_file, overrides=overrides, debug=debug)
    chosen = log_format or os.environ.get("ABACO_LOG_FORMAT", "plain")
    setup_logging("json" if chosen == "json" else "plain", debug=debug)


def main() -> None:
    """Console-script entry point (and `python -m abaco_cli`): the program is `abaco`."""
    app(prog_name="abaco")
