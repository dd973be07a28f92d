"""One exception hierarchy: each error knows its exit code and a one-line hint for the user."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of every command except `healthcheck` (see README, "Exit codes")."""

    OK = 0
    FAILED = 1
    USAGE = 2
    SOURCE_UNAVAILABLE = 3
    LOCKED = 4
    UPLOAD_PENDING = 5
    INTERRUPTED = 130


class AbacoError(Exception):
    """Base of every error abaco reports to a user: a message, a hint and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(AbacoError):
    """Bad input on the command line (a date, a format, a number)."""

    exit_code = ExitCode.USAGE


class ConfigurationError(AbacoError):
    """The effective configuration is invalid (abaco.toml, ABACO_* variables or flags)."""

    exit_code = ExitCode.USAGE
    default_hint = "Check abaco.toml and ABACO_* variables; `abaco config show` prints the result."


class SourceUnavailableError(AbacoError):
    """The source database cannot be reached (after the bounded retries)."""

    exit_code = ExitCode.SOURCE_UNAVAILABLE
    default_hint = "Check ABACO_DATABASE_URL (or PGHOST/PGPORT/...) and that the server is up."


class SourceQueryError(AbacoError):
    """The source answered but a query failed permanently (missing table, permission, syntax)."""

    exit_code = ExitCode.FAILED
    default_hint = "Run `abaco db check` to compare the database with the source contract."


class ContractError(AbacoError):
    """The source database does not satisfy the source contract."""

    exit_code = ExitCode.FAILED
    default_hint = "Run `abaco db check` for the full list; `abaco db init` creates missing tables."


class DataError(AbacoError):
    """A source value cannot be exported exactly (numeric NaN, infinite date, ...)."""

    exit_code = ExitCode.FAILED
    default_hint = "Fix the value in the source; abaco never coerces a value silently."


class LockedError(AbacoError):
    """Another run holds the dataset's lock."""

    exit_code = ExitCode.LOCKED
    default_hint = "Wait for the other run to finish, or raise ABACO_LOCK_TIMEOUT_SECONDS."


class UploadPendingError(AbacoError):
    """The run was exported and published locally, but its upload to the destination did not
    finish: the run is recorded as pending and `abaco upload` finishes it. ``results`` holds
    what the export published (its files stay published)."""

    exit_code = ExitCode.UPLOAD_PENDING
    default_hint = (
        "`abaco upload status` shows what is pending; see runbooks/upload-pending.md. Do not "
        "export again to get it uploaded."
    )

    def __init__(
        self, message: str, *, hint: str | None = None, results: list[Any] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.results: list[Any] = list(results or [])


class WriteError(AbacoError):
    """An output could not be written; the previous output is left as it was."""

    exit_code = ExitCode.FAILED
    default_hint = "Check free disk space and permissions of the runtime tree (ABACO_RUNTIME_DIR)."


class ServerToolsMissingError(AbacoError):
    """PostgreSQL's server programs (initdb, pg_ctl) are not installed."""

    exit_code = ExitCode.USAGE
    default_hint = (
        "Install them: `sudo apt-get install postgresql` (Debian/Ubuntu) or "
        "`brew install postgresql@15` (macOS), or put their folder on PATH."
    )


class AuditLogError(AbacoError):
    """The audit log cannot be written (a command that cannot be audited does not run)."""

    exit_code = ExitCode.FAILED
    default_hint = (
        "Check that the audit log's folder is writable and has free space "
        "(audit.path, ABACO_AUDIT__PATH; default <runtime_dir>/audit/audit.jsonl)."
    )


class NotFoundError(AbacoError):
    """What was asked for does not exist (an unknown run id, for example)."""

    exit_code = ExitCode.FAILED
    default_hint = "`abaco audit list --since 4w` lists recent runs and their ids."


class UnsafePathError(AbacoError):
    """A path abaco was asked to touch is not one of its places in the runtime tree (outside
    it, the wrong kind of place, or behind a symbolic link): refused, nothing touched."""

    exit_code = ExitCode.FAILED
    default_hint = (
        "abaco writes and deletes only its own places below the runtime tree and never follows "
        "a symbolic link there; `abaco audit verify` lists what is out of place."
    )


class InterruptedRun(BaseException):
    """Ctrl-C or SIGTERM during a run: it stopped cleanly; ``message`` says what was and was
    not published. A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    swallows it."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.message = ""

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"
