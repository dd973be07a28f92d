"""Connecting to the source: libpq conninfo, pooler-safe options, bounded retries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from abaco_cli.db.classify import TransientSourceError, classify
from abaco_cli.errors import ConfigurationError
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class SourceIdentity:
    """Where the source lives, safe to print: no password."""

    host: str
    port: str
    database: str
    user: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def _conninfo(settings: Settings) -> str:
    raw = settings.database_url.get_secret_value() if settings.database_url else ""
    try:
        conninfo_to_dict(raw)  # validates syntax without connecting
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            "ABACO_DATABASE_URL is not a valid libpq connection string or URL"
        ) from None
    return raw


def source_identity(settings: Settings) -> SourceIdentity:
    """Host, port, database and user as libpq would resolve them (environment included)."""
    import os

    try:
        params = conninfo_to_dict(_conninfo(settings))
    except ConfigurationError:
        params = {}

    def pick(key: str, env: str, default: str) -> str:
        return str(params.get(key) or os.environ.get(env) or default)

    user = pick("user", "PGUSER", os.environ.get("USER", ""))
    return SourceIdentity(
        host=pick("host", "PGHOST", "localhost"),
        port=pick("port", "PGPORT", "5432"),
        database=pick("dbname", "PGDATABASE", user),
        user=user,
    )


def connect(settings: Settings, *, read_only: bool = True) -> Connection:
    """Open one connection (no retry here); raises abaco errors, never psycopg ones."""
    conninfo = _conninfo(settings)
    try:
        conn = psycopg.connect(
            conninfo,
            application_name=settings.application_name,
            connect_timeout=settings.connect_timeout_seconds,
            prepare_threshold=None,  # Supabase's pooler is PgBouncer in transaction mode
        )
    except psycopg.Error as exc:
        raise classify(
            exc, redactor=Redactor.from_settings(settings), during="connecting to the source"
        ) from None
    if read_only:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    return conn


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
