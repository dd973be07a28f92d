"""`db init`, `db seed`, `db check`: the source contract and the synthetic portfolio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, TypeVar

import psycopg

from abaco_cli.audit.sink import init_audit_table
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import (
    Connection,
    SourceIdentity,
    connect,
    source_identity,
    with_retries,
)
from abaco_cli.db.contract import ContractProblem, check_contract, init_contract
from abaco_cli.errors import ContractError, UsageError
from abaco_cli.pgcluster import DEMO_DATABASE_COMMENT
from abaco_cli.redaction import Redactor
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class InitResult:
    source: str
    created: list[str]
    tables: list[str]
    audit_table: str | None = None  # with --audit: the shared audit table
    audit_created: bool = False
    audit_database: str | None = None


@dataclass(frozen=True)
class CheckResult:
    source: str
    problems: list[ContractProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


if TYPE_CHECKING:
    from abaco_cli.db.seed import SeedProgress, SeedResult


def _with_connection(
    settings: Settings,
    during: str,
    job: Callable[[Connection], T],
    on_connect: Callable[[SourceIdentity], None] | None = None,
) -> T:
    """Connect (with retries), tell ``on_connect`` what the connection reports, run ``job``,
    close; psycopg errors become abaco errors."""

    def attempt() -> T:
        conn = connect(settings, read_only=False)
        if on_connect is not None:
            on_connect(SourceIdentity.of(conn))
        try:
            return job(conn)
        except psycopg.Error as exc:
            raise classify(exc, redactor=Redactor.from_settings(settings), during=during) from None
        finally:
            conn.close()

    return with_retries(settings, attempt)


def init_database(run: Run, *, audit: bool = False, audit_writer: str | None = None) -> InitResult:
    """Create the source contract's schemas, tables and indexes that are missing; with
    ``audit``, also the shared audit table (in ``audit.database_url``, else the source), owned
    by the connecting role; ``audit_writer`` gets INSERT and SELECT on it, nothing more."""
    settings = run.settings
    with run.audited(arguments={"audit": audit, "audit_writer": audit_writer}) as record:
        created = _with_connection(
            settings,
            "creating the source contract",
            lambda c: init_contract(c, settings.tables),
            on_connect=run.connected,
        )
        tables = [str(getattr(settings.tables, role)) for role in settings.tables.roles()]
        result = InitResult(str(run.source or source_identity(settings)), created, tables)
        if audit:
            target = settings
            if settings.audit.database_url is not None:
                target = settings.model_copy(update={"database_url": settings.audit.database_url})
            table = settings.audit.table
            audit_target: list[SourceIdentity] = []
            audit_created = _with_connection(
                target,
                "creating the audit table",
                lambda c: init_audit_table(c, table, writer=audit_writer),
                on_connect=audit_target.append,
            )
            result = InitResult(
                result.source,
                created,
                tables,
                audit_table=table,
                audit_created=audit_created,
                audit_database=str(audit_target[-1]),
            )
        record.details = {
            "created": created,
            "audit_table": result.audit_table,
            "audit_created": result.audit_created,
            "audit_writer": audit_writer,
        }
    return result


def check_database(settings: Settings) -> CheckResult:
    """Compare the database with the source contract."""
    reached: list[SourceIdentity] = []
    problems = _with_connection(
        settings,
        "checking the source contract",
        lambda c: check_contract(c, settings.tables),
        on_connect=reached.append,
    )
    return CheckResult(str(reached[-1]), problems)


def seed_database(
    run: Run,
    *,
    loans: int,
    seed: int,
    through: date,
    replace: bool,
    destroy: str | None = None,
    progress: SeedProgress | None = None,
) -> SeedResult:
    """Write the deterministic synthetic portfolio (the contract must exist). ``replace``
    empties the five source tables first: only in a demo's own database, or when ``destroy``
    names the database it would empty."""
    settings = run.settings

    # the seeder (a large module) only when a database is seeded, not at every command's start
    from abaco_cli.db.seed import analyze, seed_portfolio

    def job(conn: Connection) -> SeedResult:
        if replace:
            check_may_empty(conn, destroy)
        problems = check_contract(conn, settings.tables)
        if problems:
            raise ContractError(
                f"the source contract is not met ({problems[0]}"
                + (f" and {len(problems) - 1} more)" if len(problems) > 1 else ")"),
                hint="Run `abaco db init` first.",
            )
        conn.rollback()
        result = seed_portfolio(
            conn,
            settings.tables,
            loans=loans,
            seed=seed,
            through=through,
            replace=replace,
            progress=progress,
        )
        analyze(conn, settings.tables)
        conn.commit()
        return result

    with run.audited(
        arguments={
            "loans": loans,
            "seed": seed,
            "through": through.isoformat(),
            "replace": replace,
            "destroy": destroy,
        },
    ) as record:
        result = _with_connection(
            settings, "seeding the synthetic portfolio", job, on_connect=run.connected
        )
        record.details = {
            "customers": result.customers,
            "loans": result.loans,
            "installments": result.installments,
            "payments": result.payments,
            "rate_cards": result.rate_cards,
        }
    return result


def check_may_empty(conn: Connection, destroy: str | None) -> None:
    """``db seed --replace`` empties the source tables: allowed in a demo's own database (the
    one a LocalCluster made: its comment, reached over a unix socket, as a LocalCluster server
    listens on no TCP address), or when --yes-destroy-data names the database connected to."""
    from abaco_cli.db.seed import database_facts

    facts = database_facts(conn)
    if facts is None:
        raise UsageError("--replace: could not tell which database this is; nothing was emptied")
    name = facts.name
    if (facts.comment == DEMO_DATABASE_COMMENT and facts.local_socket) or destroy == name:
        return
    given = f" (--yes-destroy-data names {destroy!r})" if destroy else ""
    raise UsageError(
        f"--replace would empty the five source tables of database {name!r}{given}; "
        f"pass --yes-destroy-data {name} to confirm",
        hint="Only a demo's own database is emptied without confirmation; never point this at "
        "production.",
    )
