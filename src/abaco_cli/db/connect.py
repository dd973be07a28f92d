"""Connecting to the source: libpq conninfo, pooler-safe options, bounded retries; a failure
with nothing configured says so, and a transaction-mode pooler's port gets one warning."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from abaco_cli.db.classify import TransientSourceError, classify
from abaco_cli.db.source import (
    CONNECTION_VARIABLES,
    URL_VARIABLE,
    SourceIdentity,
    conninfo_of,
    describe,
    nothing_configured,
    source_identity,
)
from abaco_cli.errors import AbacoError, ConfigurationError
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings

__all__ = [
    "Connection",
    "SourceIdentity",
    "connect",
    "snapshot",
    "source_identity",
    "transaction_pooler_warning",
    "with_retries",
]
log = logging.getLogger(__name__)
T = TypeVar("T")
Connection = psycopg.Connection[Any]
# Supabase's shared pooler (Supavisor) in transaction mode listens on 6543 (session mode: 5432).
TRANSACTION_POOLER_PORT = "6543"
_warned: set[str] = set()  # sources already warned about in this process (one line each)


def connect(settings: Settings, *, read_only: bool = True) -> Connection:
    """Open one connection (no retry here); raises abaco errors, never psycopg ones."""
    conninfo = conninfo_of(settings)
    try:
        conn = psycopg.connect(
            conninfo,
            application_name=settings.application_name,
            connect_timeout=settings.connect_timeout_seconds,
            prepare_threshold=None,  # no prepared statements: poolers in transaction mode
        )
    except psycopg.Error as exc:
        error = classify(
            exc, redactor=Redactor.from_settings(settings), during="connecting to the source"
        )
        if nothing_configured(settings):
            raise _nothing_configured(error, settings) from None
        raise error from None
    identity = SourceIdentity.of(conn)
    warning = transaction_pooler_warning(identity)
    if warning is not None and str(identity) not in _warned:
        _warned.add(str(identity))  # once per process, not once per connection
        log.warning("%s", warning)
    if read_only:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    return conn


def transaction_pooler_warning(identity: SourceIdentity) -> str | None:
    """One line when the port is that of a transaction-mode pooler (Supabase's 6543)."""
    if identity.port != TRANSACTION_POOLER_PORT:
        return None
    return (
        f"{identity.host}:{identity.port} looks like Supabase's transaction pooler (Supavisor, "
        "transaction mode), which keeps no session: an export holds one transaction per date "
        "and shares its snapshot between connections; use the session pooler (port 5432 on "
        "the same pooler host) or the direct connection (db.<project-ref>.supabase.co:5432), "
        "see docs/supabase.md"
    )


def _nothing_configured(error: AbacoError, settings: Settings) -> ConfigurationError:
    """libpq's defaults failed and nothing named a database: say that, not only the failure."""
    guess = describe(settings).identity
    return ConfigurationError(
        f"no source database is configured ({URL_VARIABLE}, database_url and the PG* variables "
        f"are all unset) and libpq's default, the local socket as user {guess.user!r}, failed: "
        f"{error.message}",
        hint=f"Set {URL_VARIABLE} (postgresql://user:password@host:5432/dbname), or the PG* "
        f"variables ({', '.join(CONNECTION_VARIABLES)}) or a service file; "
        "`abaco config show` says what abaco uses.",
    )


@contextmanager
def snapshot(conn: Connection, settings: Settings) -> Iterator[Connection]:
    """One read-only REPEATABLE READ transaction: every query inside sees the same instant."""
    timeout_ms = settings.statement_timeout_seconds * 1000
    with conn.transaction():
        # SET LOCAL: confined to this transaction, so it is safe behind a transaction pooler.
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        # Exports read whole results: plan for total time, not for the first rows of a cursor.
        conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        conn.execute(f"SET LOCAL work_mem = '{int(settings.work_mem_mb)}MB'")
        conn.execute("SET LOCAL jit = off")
        yield conn


def with_retries(
    settings: Settings,
    job: Callable[[], T],
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Run ``job`` and retry it on transient source failures, bounded in attempts and time."""
    policy = settings.retry

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if exc is not None:
            log.warning(
                "transient source failure (attempt %d of %d), retrying in %.1fs: %s",
                state.attempt_number,
                policy.attempts,
                wait,
                exc,
            )
            if on_retry is not None:
                on_retry(state.attempt_number, exc, wait)

    retrying = Retrying(
        retry=retry_if_exception_type(TransientSourceError),
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_total_seconds),
        wait=wait_exponential(multiplier=policy.initial_wait_seconds, max=policy.max_wait_seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(job)
