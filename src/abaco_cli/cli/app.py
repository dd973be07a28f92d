"""The root of the `abaco` command line: global options, the command groups, and the one place
that turns every error into one line on stderr and an exit code."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
import typer.main
from typer import _click as click
from typer.core import TyperGroup, TyperOption

from abaco_cli import __version__
from abaco_cli.cli import console
from abaco_cli.cli.common import AppState
from abaco_cli.cli.console import setup_logging
from abaco_cli.errors import AbacoError, ExitCode, InterruptedRun

log = logging.getLogger("abaco")
LogFormat = Literal["plain", "json"]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def run_guarded(call: Callable[[], Any]) -> int:
    """Run the command line and map whatever ends it to an exit code: usage errors (click's
    included), abaco's errors, interrupts and anything unexpected, each as one line on stderr
    (a JSON object under --log-format json; the traceback only with --debug) and, under
    --json, as a JSON object on stdout. A reader that closed stdout is not an error."""
    try:
        result = call()
    except typer.TyperException as exc:  # click's usage errors: a bad option, value, command
        if type(exc).__name__ == "NoArgsIsHelpError":
            console.stderr.print(exc.format_message(), highlight=False, markup=False)
            return int(ExitCode.USAGE)
        context = getattr(exc, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        code = int(getattr(exc, "exit_code", ExitCode.USAGE))
        console.failed(f"{_one_line(exc.format_message())}{where}", exit_code=code)
        return code
    except typer.Abort:
        console.failed("aborted", exit_code=int(ExitCode.FAILED))
        return int(ExitCode.FAILED)
    except AbacoError as exc:
        if console.debug_enabled():
            log.exception("failed")
        console.failed(exc.message, hint=exc.hint, exit_code=int(exc.exit_code))
        return int(exc.exit_code)
    except InterruptedRun as exc:
        detail = exc.message or "nothing was published"
        console.failed(
            f"interrupted by {exc.signal_name}: {detail}", exit_code=int(ExitCode.INTERRUPTED)
        )
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        console.failed(
            "interrupted before anything was written", exit_code=int(ExitCode.INTERRUPTED)
        )
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        if console.stdout_closed():  # help or version text into `| head`: not a failure
            console.discard_stdout()
            return int(ExitCode.OK)
        return _unexpected(BrokenPipeError("a pipe other than stdout was closed"))
    except SystemExit as exc:
        if exc.code == 1 and console.stdout_closed():  # rich met `| head` printing help
            return int(ExitCode.OK)
        raise
    except Exception as exc:  # noqa: BLE001 - the one place that reports whatever else ends a run
        return _unexpected(exc)
    if isinstance(result, int) and not isinstance(result, bool):
        if result == int(ExitCode.INTERRUPTED):
            console.failed(
                "interrupted before anything was written", exit_code=int(ExitCode.INTERRUPTED)
            )
        return result
    return int(ExitCode.OK)


def _unexpected(exc: Exception) -> int:
    if console.debug_enabled():
        log.exception("unexpected error", exc_info=exc)
    message = console.current_redactor().text(_one_line(str(exc)) or type(exc).__name__)
    console.failed(
        f"unexpected {type(exc).__name__}: {message} (this is a bug in abaco; "
        "`abaco --debug ...` shows the traceback)",
        exit_code=int(ExitCode.FAILED),
    )
    return int(ExitCode.FAILED)


def _wanted_output(args: Sequence[str]) -> tuple[str, bool]:
    """--log-format and --json as the command line gives them, read before click parses it,
    so that even a usage error comes out in the format asked for."""
    words = list(args)
    if "--" in words:
        words = words[: words.index("--")]
    log_format = os.environ.get("ABACO_LOG_FORMAT", "plain")
    for index, word in enumerate(words):
        if word == "--log-format" and index + 1 < len(words):
            log_format = words[index + 1]
        elif word.startswith("--log-format="):
            log_format = word.partition("=")[2]
    return ("json" if log_format == "json" else "plain"), "--json" in words


def _flags_take_no_value() -> None:
    """Typer's rich help prints `<bool>` after a flag (`--json <bool>`) as if it took a value;
    a flag shows no value type, like in click's plain help."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "abaco_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.abaco_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


@dataclass(frozen=True)
class Entry:
    """A command of the root group, imported only when it is run (or listed, for help): a
    command group (``attribute`` a Typer app) or a command (``attribute`` its function, with
    the help text named by ``help_attribute``)."""

    module: str
    attribute: str
    help_attribute: str | None = None
    also: str | None = None  # a module that adds commands to the group when imported


# The root's commands in the order `abaco --help` lists them. Importing every command group and
# building all their click commands took 23 ms of every command.
COMMANDS: dict[str, Entry] = {
    "demo": Entry("abaco_cli.cli.demo", "demo_command"),
    "prune": Entry("abaco_cli.cli.prune", "prune_command"),
    "healthcheck": Entry("abaco_cli.cli.health", "healthcheck_command", "HEALTHCHECK_HELP"),
    "migrate-tree": Entry("abaco_cli.cli.migrate", "migrate_tree_command", "MIGRATE_HELP"),
    "report": Entry("abaco_cli.cli.report", "report_command", "REPORT_HELP"),
    "db": Entry("abaco_cli.cli.db", "app"),
    "export": Entry("abaco_cli.cli.export", "app", also="abaco_cli.cli.extract"),  # + table
    "kpi": Entry("abaco_cli.cli.kpi", "app"),
    "config": Entry("abaco_cli.cli.config", "app"),
    "audit": Entry("abaco_cli.cli.audit", "app"),
    "upload": Entry("abaco_cli.cli.upload", "app"),
    "lake": Entry("abaco_cli.cli.lake", "app"),
}


def load_command(name: str, entry: Entry) -> click.Command:
    """The click command of one root command, its module imported now."""
    module = importlib.import_module(entry.module)
    if entry.also is not None:
        importlib.import_module(entry.also)
    target = getattr(module, entry.attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False)
    help_text = getattr(module, entry.help_attribute) if entry.help_attribute else None
    single.command(name, help=help_text)(target)
    return typer.main.get_command(single)


class AbacoGroup(TyperGroup):
    """The root group: its ``main`` runs the command line under ``run_guarded``, so that the
    real program and in-process test runners share one error mapping. Its commands are
    imported when they are looked up (``COMMANDS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is not None and cmd_name not in self.commands:
            self.add_command(load_command(cmd_name, entry), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in COMMANDS:  # a typo: every command loaded for "Did you mean"
            for name in self.list_commands(ctx):
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        log_format, json_result = _wanted_output(sys.argv[1:] if args is None else args)
        console.begin(log_format=log_format, json_result=json_result)
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
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="Log lines (and the error line) on stderr: plain, or json for one JSON object "
            "a line. Default: $ABACO_LOG_FORMAT, else plain.",
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
    ctx.obj = AppState(config_file=config_file, overrides=overrides, debug=debug)
    chosen = log_format or os.environ.get("ABACO_LOG_FORMAT", "plain")
    setup_logging("json" if chosen == "json" else "plain", debug=debug)


def main() -> None:
    """Console-script entry point (and `python -m abaco_cli`): the program is `abaco`."""
    try:
        app(prog_name="abaco")
    except SystemExit as exc:
        leave(exc)
    leave(SystemExit(0))


def leave(ending: SystemExit) -> NoReturn:
    """End the process without the interpreter's teardown of every module and object, 0.1 s
    of every command and nothing abaco needs: by now its files are fsynced and renamed and
    its audit record written. The exit handlers still run (logging's flush among them) and
    the standard streams are flushed first. A stream that cannot be flushed, a thread still
    running, an exit status that is not a number, or a profiler or tracer (cProfile and
    coverage write their data once the program returns) takes the ordinary way out instead."""
    code = 0 if ending.code is None else ending.code
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    running = any(t.is_alive() and not t.daemon for t in others)
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if not isinstance(code, int) or running or watched:
        raise ending
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        raise ending from None
    os._exit(code)
