"""The anchored audit trail: the PostgreSQL sink owned by a role of its own, `audit verify
--against-sink`, every live manifest tied to a record of its run, and each tamper kind of the
audit finding with the verdict docs/audit.md gives (the table VERDICTS below is that table).

Everything runs against the suite's real PostgreSQL and the real CLI; the roles are real roles
of that server (it trusts local connections, so a test connects as a role by naming it)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from abaco_cli.audit import sink
from abaco_cli.audit.actor import host_id
from tests.conftest import invoke
from tests.ops import (
    add_loans,
    audit_path,
    expected_hash,
    files_of,
    manifest_path,
    read_records,
    set_finished_at,
    write_lines,
)
from tests.test_runbooks import commands_in_markdown, parses

TABLE = "abaco_audit.audit_log"
CLOSED = "postgresql://auditor@127.0.0.1:1/audit"  # nothing listens on port 1
_roles = itertools.count(1)


# ------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class SinkRoles:
    owner: str
    writer: str
    owner_dsn: str
    writer_dsn: str


@pytest.fixture
def sink_roles(db_conninfo: str) -> Iterator[SinkRoles]:
    """Two fresh LOGIN roles: one to own the audit table, one for abaco to write with."""
    n = f"{os.getpid()}_{next(_roles)}"
    owner, writer = f"audit_owner_{n}", f"audit_writer_{n}"
    database = str(conninfo_to_dict(db_conninfo)["dbname"])
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        for role in (owner, writer):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(  # the owner may create the schema; the writer gets nothing here
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
    yield SinkRoles(
        owner,
        writer,
        make_conninfo(db_conninfo, user=owner),
        make_conninfo(db_conninfo, user=writer),
    )
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP OWNED BY {}, {} CASCADE").format(
                sql.Identifier(owner), sql.Identifier(writer)
            )
        )
        for role in (owner, writer):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def init_sink(
    cli: CliRunner, roles: SinkRoles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """`abaco db init --audit --audit-writer WRITER`, run as the owner from an admin's own
    runtime tree (its audit records stay out of the VM's log)."""
    with monkeypatch.context() as admin:
        admin.setenv("ABACO_RUNTIME_DIR", str(tmp_path / "admin_runtime"))
        admin.setenv("ABACO_AUDIT__DATABASE_URL", roles.owner_dsn)
        return invoke(cli, "db", "init", "--audit", "--audit-writer", roles.writer, "--json")


@pytest.fixture
def anchored(
    cli: CliRunner, sink_roles: SinkRoles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SinkRoles:
    """The sink created by its owner; this 'VM' copies every record there as the writer."""
    result = init_sink(cli, sink_roles, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["audit_table"]["created"] is True
    monkeypatch.setenv("ABACO_AUDIT__SINK", "postgres")
    monkeypatch.setenv("ABACO_AUDIT__DATABASE_URL", sink_roles.writer_dsn)
    monkeypatch.setenv("ABACO_AUDIT__SINK_TIMEOUT_SECONDS", "2")
    return sink_roles


def export(cli: CliRunner, day: str) -> Any:
    result = invoke(cli, "export", "dpd", "--as-of", day)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture
def history(anchored: SinkRoles, cli: CliRunner, db_conninfo: str, runtime_dir: Path) -> SinkRoles:
    """Three exports and a prune that removes nothing, all copied to the sink: records seq 1-8;
    three live manifests (dpd as of 2025-06-28, -29 and -30, written by seq 1-2, 3-4, 5-6)."""
    add_loans(db_conninfo)
    for day in ("2025-06-28", "2025-06-29", "2025-06-30"):
        export(cli, day)
    result = invoke(cli, "prune", "--retention", "3650d")
    assert result.exit_code == 0, result.stderr
    records = read_records(runtime_dir)
    assert [(r["command"], r["event"]) for r in records] == [
        *[("export dpd", "START"), ("export dpd", "COMPLETE")] * 3,
        ("prune", "START"),
        ("prune", "COMPLETE"),
    ]
    return anchored


def sink_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT host, seq, hash, event, run_id, record FROM {TABLE} ORDER BY id"
        ).fetchall()


def verify(cli: CliRunner, *extra: str) -> tuple[int, dict[str, Any]]:
    result = invoke(cli, "audit", "verify", "--json", *extra)
    return result.exit_code, json.loads(result.stdout)


def findings(report: dict[str, Any], key: str = "problems") -> list[str]:
    """Each finding's kind, with its seq when it names one (`missing_locally seq 5`)."""
    return [
        f"{p['kind']} {p['where']}" if p["where"].startswith("seq ") else p["kind"]
        for p in report[key]
    ]


def health(cli: CliRunner, check: str) -> tuple[int, str]:
    result = invoke(cli, "healthcheck", "--check", check, "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    return result.exit_code, checks[check]["state"]


def line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_chain(runtime_dir: Path, records: list[dict[str, Any]]) -> None:
    """Write records as the log and make the head name the last one, as a forger would."""
    path = audit_path(runtime_dir)
    write_lines(path, [line(r) for r in records])
    last = records[-1]
    head = path.with_name("audit.jsonl.head")
    head.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}) + "\n")


def rechain(records: list[dict[str, Any]], prev_hash: str = "0" * 64) -> list[dict[str, Any]]:
    """Recompute every prev_hash and hash (the documented rule, by hand: tests/ops.py)."""
    for record in records:
        record["prev_hash"] = prev_hash
        record["hash"] = expected_hash(record)
        prev_hash = record["hash"]
    return records


def copy_run_in(other: Path, runtime_dir: Path, day: str) -> dict[str, Any]:
    """Copy one run's manifest and files from another runtime tree, as an operator restoring
    from a bucket (or someone planting a run) would; returns the manifest."""
    source = manifest_path(other, "dpd", day)
    paths = [source, *files_of(source)]
    for path in paths:
        target = runtime_dir / path.relative_to(other)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    manifest: dict[str, Any] = json.loads(source.read_text())
    return manifest


# ------------------------------------------------------------------------- 1. sink ownership


def test_the_sink_belongs_to_its_owner_and_the_writer_can_only_insert_and_read(
    anchored: SinkRoles, db_conninfo: str
) -> None:
    roles = anchored
    with psycopg.connect(db_conninfo) as admin:
        owners = admin.execute(
            "SELECT pg_get_userbyid(c.relowner), pg_get_userbyid(n.nspowner)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(%s)",
            (TABLE,),
        ).fetchone()
        functions = admin.execute(
            "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_trigger t"
            " JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE t.tgrelid = to_regclass(%s) AND NOT t.tgisinternal",
            (TABLE,),
        ).fetchall()
    assert owners == (roles.owner, roles.owner)
    assert functions == [(roles.owner,)]

    insert = (
        f"INSERT INTO {TABLE} (host, seq, recorded_at, event, run_id, command, exit_code,"
        " prev_hash, hash, record, received_at) VALUES (%s, %s, now(), 'START', 'r1', 'test',"
        " NULL, %s, %s, '{}', '2000-01-01')"
    )
    with psycopg.connect(roles.writer_dsn, autocommit=True) as writer:
        writer.execute(insert, ("probe-host", 1, "0" * 64, "a" * 64))
        writer.execute(insert, ("probe-host", 1, "0" * 64, "a" * 64))  # the same again: skipped
        count, received = writer.execute(
            f"SELECT count(*), min(received_at) FROM {TABLE} WHERE host = 'probe-host'"
        ).fetchone() or (None, None)
        assert count == 1
        assert received.year > 2000  # the server's clock, not the client's
        with pytest.raises(psycopg.errors.RaiseException, match="already holds a different"):
            writer.execute(insert, ("probe-host", 1, "0" * 64, "b" * 64))  # another seq 1
        for statement in (
            f"DELETE FROM {TABLE}",
            f"UPDATE {TABLE} SET event = 'FAIL'",
            f"TRUNCATE {TABLE}",
            f"ALTER TABLE {TABLE} DISABLE TRIGGER abaco_audit_append_only",
            f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL",
            f"DROP TRIGGER abaco_audit_append_only ON {TABLE}",
            f"DROP TRIGGER abaco_audit_one_record_per_seq ON {TABLE}",
            f"DROP TABLE {TABLE}",
            "DROP FUNCTION abaco_audit.audit_log_append_only() CASCADE",
            "DROP SCHEMA abaco_audit CASCADE",
            f"ALTER TABLE {TABLE} OWNER TO CURRENT_USER",
            "CREATE TABLE abaco_audit.decoy (id int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute(statement)
                pytest.fail(f"the writer may run {statement}")
        writer.execute(f"GRANT DELETE ON {TABLE} TO CURRENT_USER")  # only a warning: no grant
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            writer.execute(f"DELETE FROM {TABLE}")
    with psycopg.connect(roles.owner_dsn, autocommit=True) as owner:  # the trigger holds it too
        for statement in (f"DELETE FROM {TABLE}", f"TRUNCATE {TABLE}"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                owner.execute(statement)
    assert len(sink_rows(db_conninfo)) == 1


def test_records_reach_the_sink_as_the_writer_under_this_hosts_id(
    history: SinkRoles, cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    local = read_records(runtime_dir)
    assert {r["host_id"] for r in local} == {host_id()}
    rows = sink_rows(db_conninfo)
    assert [(h, s, d, e, r) for h, s, d, e, r, _ in rows] == [
        (rec["host_id"], rec["seq"], rec["hash"], rec["event"], rec["run_id"]) for rec in local
    ]
    assert [record for *_, record in rows] == local
    code, report = verify(cli, "--against-sink")
    assert (code, report["problems"], report["sink_rows"]) == (0, [], 8)
    assert health(cli, "sink") == (0, "OK")
    assert health(cli, "audit") == (0, "OK")


def test_db_init_refuses_a_writer_that_could_change_the_table(
    cli: CliRunner,
    sink_roles: SinkRoles,
    db_conninfo: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    roles = sink_roles
    superuser = str(conninfo_to_dict(db_conninfo)["user"])
    for writer, says in (
        (roles.owner, "owns (or is a member of the owner of)"),  # owner and writer the same
        (superuser, "is a superuser"),
        ("no_such_role_here", "does not exist"),
    ):
        refused = init_sink(
            cli, SinkRoles(roles.owner, writer, roles.owner_dsn, ""), tmp_path, monkeypatch
        )
        assert refused.exit_code == 2, refused.stderr
        assert says in refused.stderr
    with psycopg.connect(db_conninfo) as conn:  # each was rolled back whole
        assert conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone() == (None,)

    # A table made the old way, by the role abaco writes with, is refused until it is moved.
    with monkeypatch.context() as old:
        old.setenv("ABACO_RUNTIME_DIR", str(tmp_path / "admin_runtime"))
        old.setenv("ABACO_AUDIT__DATABASE_URL", db_conninfo)
        assert invoke(cli, "db", "init", "--audit").exit_code == 0
    with psycopg.connect(db_conninfo) as conn:
        conn.execute(
            sql.SQL("ALTER SCHEMA abaco_audit OWNER TO {}").format(sql.Identifier(roles.writer))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.SQL(TABLE), sql.Identifier(roles.writer)
            )
        )
    refused = init_sink(cli, roles, tmp_path, monkeypatch)
    assert refused.exit_code == 2, refused.stderr
    assert f"owned by role '{roles.writer}'" in refused.stderr
    with psycopg.connect(db_conninfo) as conn:  # docs/audit.md: a superuser moves it
        conn.execute(
            sql.SQL("ALTER SCHEMA abaco_audit OWNER TO {}").format(sql.Identifier(roles.owner))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.SQL(TABLE), sql.Identifier(roles.owner)
            )
        )
        for function in ("audit_log_append_only", "audit_log_one_record_per_seq"):
            conn.execute(
                sql.SQL("ALTER FUNCTION abaco_audit.{}() OWNER TO {}").format(
                    sql.Identifier(function), sql.Identifier(roles.owner)
                )
            )
    moved = init_sink(cli, roles, tmp_path, monkeypatch)
    assert moved.exit_code == 0, moved.stderr
    assert json.loads(moved.stdout)["audit_table"]["created"] is False


# ------------------------------------------------------------------ 2. the tamper kinds, judged

FORGED_RUN = "20250701T020000Z-f0f0f0"


def truncate_end(cli: CliRunner, runtime_dir: Path) -> None:
    """Cut the last run of the 2025-06-30 export and the prune (seq 5-8); head -> seq 4."""
    write_chain(runtime_dir, read_records(runtime_dir)[:4])


def truncate_end_no_manifest(cli: CliRunner, runtime_dir: Path) -> None:
    """Cut only the prune's records (seq 7-8), runs without a manifest; head -> seq 6."""
    write_chain(runtime_dir, read_records(runtime_dir)[:6])


def rebuild_with_forged_actor(cli: CliRunner, runtime_dir: Path) -> None:
    """Every record says mallory ran it; every hash and link recomputed; head rewritten."""
    records = read_records(runtime_dir)
    for record in records:
        record["actor"]["user"] = "mallory"
    write_chain(runtime_dir, rechain(records))


def delete_both_files(cli: CliRunner, runtime_dir: Path) -> None:
    path = audit_path(runtime_dir)
    path.unlink()
    path.with_name("audit.jsonl.head").unlink()


def delete_both_then_export(cli: CliRunner, runtime_dir: Path) -> None:
    """The log and head deleted, then the next export starts a new chain at seq 1."""
    delete_both_files(cli, runtime_dir)
    result = export(cli, "2025-07-01")
    assert "already holds a different record seq 1" in result.stderr  # the sink refused it


def append_forged_record(cli: CliRunner, runtime_dir: Path) -> None:
    """One forged COMPLETE, correctly chained to the last record; head updated."""
    records = read_records(runtime_dir)
    forged = copy.deepcopy(records[5])  # the COMPLETE of the 2025-06-30 export
    forged.update(
        seq=records[-1]["seq"] + 1,
        run_id=FORGED_RUN,
        time="2025-07-01T02:00:05.000Z",
        as_of_dates=["2025-07-01"],
        outputs=[],
    )
    forged["actor"]["user"] = "mallory"
    write_chain(runtime_dir, [*records, *rechain([forged], records[-1]["hash"])])


def edit_last_record(cli: CliRunner, runtime_dir: Path) -> None:
    """The last record (the prune's COMPLETE) edited, its hash recomputed, head rewritten."""
    records = read_records(runtime_dir)
    records[-1]["actor"]["user"] = "mallory"
    records[-1]["hash"] = expected_hash(records[-1])
    write_chain(runtime_dir, records)


def _plant(cli: CliRunner, runtime_dir: Path) -> Path:
    """Export 2025-07-01 into another tree (no sink) and copy that run into this one."""
    other = runtime_dir.parent / "other_runtime"
    with pytest.MonkeyPatch.context() as elsewhere:
        elsewhere.setenv("ABACO_RUNTIME_DIR", str(other))
        elsewhere.setenv("ABACO_AUDIT__SINK", "none")
        export(cli, "2025-07-01")
    copy_run_in(other, runtime_dir, "2025-07-01")
    return manifest_path(runtime_dir, "dpd", "2025-07-01")


def plant_a_run(cli: CliRunner, runtime_dir: Path) -> None:
    """Another run's manifest and files copied in (a run no record of this host names)."""
    _plant(cli, runtime_dir)


def plant_a_backdated_run(cli: CliRunner, runtime_dir: Path) -> None:
    """The same, its finished_at set before the log's first record (as if the log was archived)."""
    set_finished_at(_plant(cli, runtime_dir), datetime(2025, 6, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Verdict:
    """What each check says after the tamper: the problems of `audit verify` without and with
    --against-sink (exit 0 when none, else 1) and the states of healthcheck audit and sink."""

    local: list[str]
    against_sink: list[str]
    health_audit: str
    health_sink: str


def _seqs(kind: str, *seqs: int) -> list[str]:
    return [f"{kind} seq {s}" for s in seqs]


UNAUDITED_ALL = ["unaudited_run"] * 3  # the manifests of 2025-06-28, -29 and -30

# The table of docs/audit.md ("tamper -> verdict"): keep the two in step.
VERDICTS: dict[str, tuple[Callable[[CliRunner, Path], None], Verdict]] = {
    "truncate the end (a live manifest's run), head rewritten": (
        truncate_end,
        Verdict(
            ["unaudited_run"],
            ["unaudited_run", *_seqs("missing_locally", 5, 6, 7, 8)],
            "CRITICAL",
            "CRITICAL",
        ),
    ),
    "truncate the end (runs without a manifest), head rewritten": (
        truncate_end_no_manifest,
        Verdict([], _seqs("missing_locally", 7, 8), "OK", "CRITICAL"),
    ),
    "rebuild the whole chain with a forged actor": (
        rebuild_with_forged_actor,
        Verdict([], _seqs("differs_from_sink", *range(1, 9)), "OK", "CRITICAL"),
    ),
    "delete audit.jsonl and audit.jsonl.head": (
        delete_both_files,
        Verdict(
            UNAUDITED_ALL,
            [*UNAUDITED_ALL, *_seqs("missing_locally", *range(1, 9))],
            "CRITICAL",
            "CRITICAL",
        ),
    ),
    "delete both files, then the next export starts a new chain": (
        delete_both_then_export,
        Verdict(
            [],
            [*_seqs("differs_from_sink", 1, 2), *_seqs("missing_locally", *range(3, 9))],
            "OK",
            "CRITICAL",
        ),
    ),
    "append one correctly chained forged record": (
        append_forged_record,
        Verdict([], _seqs("missing_in_sink", 9), "OK", "WARNING"),
    ),
    "edit the last record, recompute its hash, rewrite the head": (
        edit_last_record,
        Verdict([], _seqs("differs_from_sink", 8), "OK", "CRITICAL"),
    ),
    "copy in another run's manifest and files": (
        plant_a_run,
        Verdict(["unaudited_run"], ["unaudited_run"], "CRITICAL", "OK"),
    ),
    "copy in another run's manifest, backdated before the log": (
        plant_a_backdated_run,
        Verdict([], ["unanchored_run"], "OK", "CRITICAL"),
    ),
}
HEALTH_EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2}


@pytest.mark.parametrize("tamper", list(VERDICTS))
def test_each_tamper_kind_gets_the_documented_verdict(
    tamper: str, history: SinkRoles, cli: CliRunner, runtime_dir: Path
) -> None:
    action, expected = VERDICTS[tamper]
    assert verify(cli, "--against-sink")[0] == 0  # intact before
    action(cli, runtime_dir)

    code, report = verify(cli)
    assert findings(report) == expected.local
    assert code == (1 if expected.local else 0)
    assert report["sink_rows"] is None

    code, report = verify(cli, "--against-sink")
    assert findings(report) == expected.against_sink
    assert code == (1 if expected.against_sink else 0)

    for check, state in (("audit", expected.health_audit), ("sink", expected.health_sink)):
        assert health(cli, check) == (HEALTH_EXIT[state], state), check


def test_the_verdict_table_covers_every_tamper_kind_of_the_finding() -> None:
    """Finding 6 names five tampers; each has at least one row (truncation and deletion two:
    what they cut decides what the local check can see)."""
    named = " | ".join(VERDICTS)
    for words in ("truncate the end", "forged actor", "delete audit.jsonl", "append one", "edit"):
        assert words in named
    undetected_locally = [name for name, (_, v) in VERDICTS.items() if not v.local]
    assert all(VERDICTS[name][1].against_sink for name in undetected_locally)


# ------------------------------------------------------- 3. manifests without a record of their run


def test_a_copied_in_manifest_is_unaudited_until_record_restore_names_it(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo)
    export(cli, "2025-06-29")
    other = tmp_path / "other_runtime"
    with monkeypatch.context() as elsewhere:
        elsewhere.setenv("ABACO_RUNTIME_DIR", str(other))
        export(cli, "2025-06-30")
    manifest = copy_run_in(other, runtime_dir, "2025-06-30")
    assert manifest["run_id"] not in {r["run_id"] for r in read_records(runtime_dir)}

    code, report = verify(cli)
    assert (code, findings(report)) == (1, ["unaudited_run"])
    assert report["problems"][0]["where"] == "dpd/_manifests/dpd_2025-06-30.manifest.json"
    assert health(cli, "audit") == (2, "CRITICAL")

    # record-restore checks every file against the manifest first
    planted = runtime_dir / "exports" / manifest["files"][0]["path"]
    good = planted.read_bytes()
    planted.write_bytes(good.replace(b"1000.00", b"9000.00"))
    refused = invoke(cli, "audit", "record-restore", "--dataset", "dpd", "--as-of", "2025-06-30")
    assert refused.exit_code == 2
    assert "does not match its manifest" in refused.stderr
    assert "RESTORE" not in {r["event"] for r in read_records(runtime_dir)}
    code, report = verify(cli)
    assert (code, findings(report)) == (1, ["modified_file", "unaudited_run"])

    planted.write_bytes(good)
    done = invoke(
        cli, "audit", "record-restore", "--dataset", "dpd", "--as-of", "2025-06-30",
        "--reason", "restored from the bucket after a prune",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    restore = next(r for r in read_records(runtime_dir) if r["event"] == "RESTORE")
    assert restore["run_id"] == manifest["run_id"]
    assert {(o["path"], o["sha256"]) for o in restore["outputs"]} == {
        (f["path"], f["sha256"]) for f in manifest["files"]
    }
    code, report = verify(cli)
    assert (code, report["problems"]) == (0, [])
    assert health(cli, "audit") == (0, "OK")
    listed = invoke(cli, "audit", "list", "--json", "--status", "restored")
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == [manifest["run_id"]]


def test_a_manifest_that_names_a_file_its_record_does_not_is_edited(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    """A manifest tied to its run must name exactly the files the run's record lists."""
    add_loans(db_conninfo)
    export(cli, "2025-06-30")
    path = manifest_path(runtime_dir, "dpd", "2025-06-30")
    data = json.loads(path.read_text())
    extra = copy.deepcopy(data["files"][0])
    folder, _, name = extra["path"].rpartition("/")
    planted = runtime_dir / "exports" / folder / name.replace(".csv", "_extra.csv")
    planted.write_bytes(b"loan_id\r\nX\r\n")
    extra["path"] = planted.relative_to(runtime_dir / "exports").as_posix()
    extra["bytes"] = planted.stat().st_size
    extra["sha256"] = hashlib.sha256(planted.read_bytes()).hexdigest()
    data["files"].append(extra)
    path.write_text(json.dumps(data, indent=2))
    code, report = verify(cli)
    assert (code, findings(report)) == (1, ["manifest_edited"])
    assert extra["path"] in report["problems"][0]["message"]

    data["files"] = data["files"][1:-1]  # and one the record lists is left out
    path.write_text(json.dumps(data, indent=2))
    code, report = verify(cli)
    assert (code, findings(report)) == (1, ["manifest_edited"])
    assert "no longer names" in report["problems"][0]["message"]


def test_an_archived_log_continues_the_chain_and_older_runs_become_notes(
    history: SinkRoles, cli: CliRunner, runtime_dir: Path, tmp_path: Path
) -> None:
    path = audit_path(runtime_dir)
    last = read_records(runtime_dir)[-1]
    archive = tmp_path / "audit-2025-06.jsonl"
    shutil.move(path, archive)  # docs/audit.md: move the log, keep audit.jsonl.head
    export(cli, "2025-07-01")
    records = read_records(runtime_dir)
    assert [r["seq"] for r in records] == [9, 10]
    assert records[0]["prev_hash"] == last["hash"]

    code, report = verify(cli)
    assert (code, report["problems"]) == (0, [])
    assert findings(report, "notes") == ["log_continues", *["predates_log"] * 3]
    code, report = verify(cli, "--against-sink")  # the sink holds both logs as one chain
    assert (code, report["problems"], report["sink_rows"]) == (0, [], 2)
    assert health(cli, "audit") == (0, "OK")
    assert health(cli, "sink") == (0, "OK")


def test_a_log_lost_on_this_host_continues_from_the_sinks_last_record(
    history: SinkRoles, cli: CliRunner, runtime_dir: Path
) -> None:
    """docs/audit.md, "Lost the log": write the head from the sink's last row of this host."""
    delete_both_files(cli, runtime_dir)
    with psycopg.connect(history.writer_dsn) as conn:
        row = conn.execute(
            "SELECT json_build_object('seq', seq, 'hash', hash) FROM abaco_audit.audit_log"
            " WHERE host = %s ORDER BY seq DESC LIMIT 1",
            (host_id(),),
        ).fetchone()
    assert row is not None
    audit_path(runtime_dir).with_name("audit.jsonl.head").write_text(json.dumps(row[0]) + "\n")
    result = export(cli, "2025-07-01")
    assert "audit copy in PostgreSQL" not in result.stderr
    assert [r["seq"] for r in read_records(runtime_dir)] == [9, 10]
    for extra in ((), ("--against-sink",)):
        code, report = verify(cli, *extra)
        assert (code, report["problems"]) == (0, [])
        assert findings(report, "notes") == ["log_continues", *["predates_log"] * 3]


def test_a_log_that_claims_to_continue_but_does_not_link_to_the_sink_is_caught(
    history: SinkRoles, cli: CliRunner, runtime_dir: Path
) -> None:
    """Records 1-8 replaced by one forged record seq 9 that links to nothing the sink holds."""
    forged = read_records(runtime_dir)[-1]
    forged.update(seq=9, run_id=FORGED_RUN)
    delete_both_files(cli, runtime_dir)
    write_chain(runtime_dir, rechain([forged], "f" * 64))
    code, report = verify(cli)
    assert (code, report["problems"]) == (0, [])  # locally: an archive
    assert findings(report, "notes") == ["log_continues", *["predates_log"] * 3]
    code, report = verify(cli, "--against-sink")
    assert findings(report) == ["differs_from_sink seq 8", "missing_in_sink seq 9"]
    assert code == 1


# --------------------------------------------------------------------------- 4. the sink down


def test_a_down_sink_never_fails_an_export_and_shows_as_a_warning(
    cli: CliRunner,
    sink_roles: SinkRoles,
    db_conninfo: str,
    runtime_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert init_sink(cli, sink_roles, tmp_path, monkeypatch).exit_code == 0
    add_loans(db_conninfo)
    monkeypatch.setenv("ABACO_AUDIT__SINK", "postgres")
    monkeypatch.setenv("ABACO_AUDIT__SINK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("ABACO_AUDIT__DATABASE_URL", CLOSED)
    result = export(cli, "2025-06-29")
    assert result.stderr.count("the audit copy in PostgreSQL") == 2

    code, report = verify(cli, "--against-sink")
    assert (code, findings(report)) == (1, ["sink_unreachable"])
    assert "127.0.0.1" in report["problems"][0]["message"]
    assert verify(cli)[0] == 0  # without the sink nothing is wrong
    assert health(cli, "sink") == (1, "WARNING")
    assert health(cli, "audit") == (0, "OK")

    monkeypatch.setenv("ABACO_AUDIT__DATABASE_URL", sink_roles.writer_dsn)  # back up
    code, report = verify(cli, "--against-sink")
    assert (code, findings(report)) == (1, _seqs("missing_in_sink", 1, 2))
    assert health(cli, "sink") == (1, "WARNING")

    export(cli, "2025-06-30")  # reaches the sink; the two it missed are never copied later
    code, report = verify(cli, "--against-sink")
    assert (code, findings(report)) == (1, _seqs("missing_in_sink", 1, 2))
    assert [row[1] for row in sink_rows(db_conninfo)] == [3, 4]
    assert health(cli, "sink") == (1, "WARNING")


def test_against_sink_without_a_sink_is_a_problem(cli: CliRunner, db_conninfo: str) -> None:
    add_loans(db_conninfo)
    export(cli, "2025-06-30")
    code, report = verify(cli, "--against-sink")
    assert (code, findings(report)) == (1, ["no_sink"])
    assert health(cli, "sink") == (0, "OK")


def test_the_writer_cannot_launder_a_rewritten_chain_into_the_sink(
    history: SinkRoles, cli: CliRunner, runtime_dir: Path
) -> None:
    """Whoever holds the VM (and so the writer's password) rewrites the chain and inserts the
    forged records too: the sink keeps the first record of each seq and refuses the rest."""
    rebuild_with_forged_actor(cli, runtime_dir)
    forged = read_records(runtime_dir)
    for record in forged:
        with pytest.raises(psycopg.errors.RaiseException, match="already holds a different"):
            sink.send(history.writer_dsn, TABLE, record, timeout_seconds=2)
    with (
        psycopg.connect(history.writer_dsn) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="already holds a different"),
    ):
        conn.execute(  # an id of its choosing, before the genuine rows: refused all the same
            f"INSERT INTO {TABLE} (id, host, seq, recorded_at, event, run_id, command, prev_hash,"
            " hash, record) OVERRIDING SYSTEM VALUE VALUES (-1, %s, 1, now(), 'START', 'r',"
            " 'export dpd', %s, %s, '{}')",
            (forged[0]["host_id"], forged[0]["prev_hash"], forged[0]["hash"]),
        )
    code, report = verify(cli, "--against-sink")
    assert (code, findings(report)) == (1, _seqs("differs_from_sink", *range(1, 9)))


# ------------------------------------------------------------------- 5. docs/audit.md agrees

DOC = Path(__file__).resolve().parent.parent / "docs" / "audit.md"
_TIMES = "\u00d7"  # the multiplication sign: `unaudited_run` (times) 3
_ITEM = re.compile(r"^`(\w+)`(?: " + _TIMES + r"(\d+))?(?: seq (\d+)(?:-(\d+))?)?$")


def _cell(text: str) -> list[str]:
    """`unaudited_run` + `missing_locally` seq 5-8 -> the findings() list it stands for."""
    if text == "nothing":
        return []
    expanded: list[str] = []
    for item in text.split(" + "):
        match = _ITEM.match(item.strip())
        assert match, f"docs/audit.md: cannot read {item!r}"
        kind, times, low, high = match.groups()
        if low is None:
            expanded += [kind] * int(times or 1)
        else:
            expanded += _seqs(kind, *range(int(low), int(high or low) + 1))
    return expanded


def test_the_docs_verdict_table_is_the_tested_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Tamper -> verdict", 1)[1].split("\n### ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| tamper")
    ]
    documented = {
        name: Verdict(_cell(local), _cell(with_sink), audit, sink_state)
        for name, local, with_sink, audit, sink_state in rows
    }
    assert documented == {name: verdict for name, (_, verdict) in VERDICTS.items()}


def test_the_docs_commands_parse_against_the_real_cli() -> None:
    found = list(commands_in_markdown(DOC))
    assert {f.args[:2] for f in found} >= {
        ("db", "init"),
        ("audit", "verify"),
        ("audit", "record-restore"),
        ("healthcheck", "--check"),
    }
    for command in found:
        ok, why = parses(list(command.args))
        assert ok, f"{command}: {why}"
