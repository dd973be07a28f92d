"""Sort psycopg errors into transient (retry) and permanent, in one place."""

from __future__ import annotations

import psycopg

from abaco_cli.errors import AbacoError, SourceQueryError, SourceUnavailableError
from abaco_cli.redaction import Redactor

# SQLSTATEs worth a retry: the same statement may well succeed a moment later.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)
AUTH_SQLSTATES = frozenset({"28000", "28P01"})


class TransientSourceError(SourceUnavailableError):
    """A failure that a retry may cure (connection refused or reset, shutdown, serialization)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def classify(exc: psycopg.Error, *, during: str, redactor: Redactor) -> AbacoError:
    """Translate a psycopg error into abaco's hierarchy: transient, unavailable or query error;
    the message goes through ``redactor`` (``Redactor.from_settings(settings)``)."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    primary = exc.diag.message_primary if sqlstate else None
    message = redactor.text(primary or _first_line(exc))
    if sqlstate in AUTH_SQLSTATES or "authentication failed" in message:
        return SourceUnavailableError(
            f"{during}: the database refused the credentials: {message}",
            hint="Check the user and password in ABACO_DATABASE_URL (or PGUSER/PGPASSWORD).",
        )
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08"):
        return TransientSourceError(f"{during}: {message}")
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        # libpq-level failures carry no SQLSTATE: refused, reset, timed out, unknown host.
        return TransientSourceError(f"{during}: {message}")
    if sqlstate == "57014":
        return SourceQueryError(
            f"{during}: the query was cancelled (statement timeout?): {message}",
            hint="Raise ABACO_STATEMENT_TIMEOUT_SECONDS or check the database's load.",
        )
    return SourceQueryError(f"{during}: {message}")
