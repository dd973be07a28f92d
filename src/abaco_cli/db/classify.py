"""Sort psycopg errors into transient (retry) and permanent, in one place.

Transient: what a moment may cure (a refused or reset connection, a server starting up or shut
down by its administrator, a serialization failure, too many connections, a DNS server that did
not answer). Permanent: what no retry cures (a database or role that does not exist, a host
name that does not resolve, TLS that the server cannot give or that fails verification, bad
credentials): one line at once, exit 3, no retries.
"""

from __future__ import annotations

import re

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
# Connection failures that carry no SQLSTATE (libpq's own, or the server's FATAL before the
# session exists) but will never fix themselves: (pattern of the message, what, hint).
_WHERE = "ABACO_DATABASE_URL (or PGHOST/PGDATABASE/..., or the service file)"
PERMANENT_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), what, hint)
    for pattern, what, hint in (
        (
            r'database "[^"]*" does not exist',
            "the database does not exist",
            f"Check the database name (dbname) in {_WHERE}; `abaco config show` shows it.",
        ),
        (
            r"(failed to resolve host|could not translate host name)(?!.*(temporary|try again))"
            r".*(not known|nodename nor servname|no address associated|errno -2\b|errno 8\b)",
            "the host name does not resolve",
            f"Check the host in {_WHERE}; on Supabase, the direct host db.<ref>.supabase.co "
            "has only an IPv6 address unless the IPv4 add-on is bought: from an IPv4-only "
            "network use the session pooler (docs/supabase.md).",
        ),
        (
            r"server does not support SSL, but SSL was required",
            "the server offers no TLS, and sslmode requires it",
            "Check the host and port (Supabase always offers TLS); use sslmode=prefer or "
            "disable only on a network you trust.",
        ),
        (
            r"certificate verify failed|root certificate file .* does not exist|"
            r"server certificate for .* does not match host name|"
            r"could not read root certificate file",
            "the server's TLS certificate cannot be verified",
            "Check sslrootcert (the CA file, e.g. Supabase's from the dashboard) and that the "
            "host name is the one in the certificate (sslmode=verify-full).",
        ),
        (
            r'role "[^"]*" does not exist|no pg_hba\.conf entry|no password supplied|'
            r"tenant or user not found",
            "the database refused the connection",
            "Check the user and password in ABACO_DATABASE_URL (or PGUSER/PGPASSWORD); "
            "Supabase's pooler wants the user as <role>.<project-ref>.",
        ),
    )
)


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
    if sqlstate == "3D000" or (isinstance(exc, psycopg.OperationalError) and not sqlstate):
        for pattern, what, hint in PERMANENT_CONNECT_FAILURES:
            if pattern.search(message):
                return SourceUnavailableError(f"{during}: {what}: {message}", hint=hint)
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08"):
        return TransientSourceError(f"{during}: {message}")
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        # libpq-level failures carry no SQLSTATE: refused, reset, timed out, a DNS server
        # that did not answer; a permanent one was recognised above.
        return TransientSourceError(f"{during}: {message}")
    if sqlstate == "57014":
        return SourceQueryError(
            f"{during}: the query was cancelled (statement timeout?): {message}",
            hint="Raise ABACO_STATEMENT_TIMEOUT_SECONDS or check the database's load.",
        )
    return SourceQueryError(f"{during}: {message}")
