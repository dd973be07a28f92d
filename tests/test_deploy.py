"""deploy/: the systemd units and timers, the cron file, the install script, the wrapper.

systemd's own tools judge the units (`systemd-analyze verify`, `security --offline`,
`calendar`); the cron lines run for real under /bin/sh with a stand-in abaco; install.sh runs with
--dry-run; and a real export, uploads through the cloud libraries to local S3 and GCS servers, and
the lake's Delta writes run under the kernel mechanisms behind the sandbox's riskiest settings
(PR_SET_MDWE for MemoryDenyWriteExecute=, a seccomp filter built from systemd's own syscall groups
for SystemCallFilter=, a /proc mounted with subset=pid for ProcSubset=pid).
"""

from __future__ import annotations

import fcntl
import grp
import itertools
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from abaco_cli.settings import LakeSettings
from tests.conftest import Server

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
DROPIN = SYSTEMD / "abaco-.service.d" / "sandbox.conf"
CRON = DEPLOY / "cron" / "abaco.cron"
ABACO_BIN = "/opt/abaco/venv/bin/abaco"
SECURITY_THRESHOLD = 2.0

DATASET_TIMERS = {
    "dpd": "abaco-export-dpd.timer",
    "kpi": "abaco-export-kpi.timer",
    "pricing": "abaco-export-pricing.timer",
    "analytics": "abaco-export-analytics.timer",
}
DAILY = ("kpi", "pricing", "analytics")
LAKE_SERVICE = "abaco-lake-sync.service"
LAKE_TIMER = "abaco-lake-sync.timer"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd; .ci/run installs it)",
)


# --- reading unit files ------------------------------------------------------------------


Unit = dict[str, list[tuple[str, str]]]


def read_unit(*paths: Path) -> Unit:
    """Sections of one unit and its drop-ins, in order; a key may repeat (ExecStart=, ...)."""
    sections: Unit = {}
    for path in paths:
        section = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                sections.setdefault(section, [])
                continue
            key, _, value = line.partition("=")
            sections.setdefault(section, []).append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str | None:
    """The effective value of a single-valued key: the last assignment wins."""
    found = values(unit, section, key)
    return found[-1] if found else None


def dropins(name: str) -> list[Path]:
    """The drop-ins systemd applies to a service, in its order: the files of abaco-.service.d/
    and of the unit's own <name>.d/ (a template's: foo@.service.d/) sorted by file name across
    both folders, the later one winning; of two with the same name, the unit's own."""
    folders = [SYSTEMD / "abaco-.service.d", SYSTEMD / f"{unit_file_for(name).name}.d"]
    if name != unit_file_for(name).name:
        folders.append(SYSTEMD / f"{name}.d")
    found: dict[str, Path] = {}
    for folder in folders:
        for path in folder.glob("*.conf"):
            found[path.name] = path
    return [found[file_name] for file_name in sorted(found)]


def effective_service(name: str) -> Unit:
    """A service as systemd loads it: the file, then its drop-ins."""
    return read_unit(unit_file_for(name), *dropins(name))


def services() -> list[str]:
    return sorted(p.name for p in SYSTEMD.glob("*.service"))


def timers() -> list[str]:
    return sorted(p.name for p in SYSTEMD.glob("*.timer"))


def timer_target(timer: str) -> str:
    target = value(read_unit(SYSTEMD / timer), "Timer", "Unit")
    assert target, f"{timer} has no Unit="
    return target


def unit_file_for(name: str) -> Path:
    """The file that defines a unit: itself, or its template (foo@bar.service: foo@.service)."""
    direct = SYSTEMD / name
    if direct.is_file():
        return direct
    template = re.sub(r"@[^.]+\.", "@.", name)
    return SYSTEMD / template


_SPAN_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def seconds(span: str) -> float:
    """A systemd time span ("45min", "5min", "30s", "1h 30min", "90") in seconds."""
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+\s*", span), span
    for number, unit in parts:
        assert unit in _SPAN_UNITS or unit == "", f"unit {unit!r} in {span!r}"
        total += float(number) * _SPAN_UNITS.get(unit, 1)
    return total


def elapses(calendar: str, iterations: int = 4) -> list[datetime]:
    """The next elapse times of an OnCalendar= expression, computed by systemd, in UTC."""
    out = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={iterations}", calendar],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", out)
    assert len(stamps) == iterations, out
    return [datetime.fromisoformat(s) for s in stamps]


@pytest.fixture(scope="module")
def verify_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/systemd copied with ExecStart pointing at a binary that exists (verify needs one),
    plus a file per template instance that a timer starts."""
    folder = tmp_path_factory.mktemp("units")
    stand_in = shutil.which("true") or "/bin/true"
    shutil.copytree(SYSTEMD, folder, dirs_exist_ok=True)
    for unit in folder.glob("*.service"):
        unit.write_text(unit.read_text(encoding="utf-8").replace(ABACO_BIN, stand_in))
    for timer in timers():
        target = timer_target(timer)
        if not (folder / target).exists():
            shutil.copy(folder / unit_file_for(target).name, folder / target)
    return folder


# --- systemd's verdicts --------------------------------------------------------------------


@needs_systemd_analyze
def test_systemd_analyze_verify_passes_on_every_unit_and_instance(verify_copy: Path) -> None:
    names = [*services(), *timers()]
    names += [timer_target(t) for t in timers() if "@" in timer_target(t)]
    names = [n for n in dict.fromkeys(names) if not n.endswith("@.service")]
    names.append("abaco-export@.service")  # the template file itself
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(verify_copy / n) for n in names)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Only complaints about our units count (a host may have unrelated broken units).
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "abaco" in line or str(verify_copy) in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ours, "\n".join(ours)


def _security_supports_offline() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    out = subprocess.run(
        ["systemd-analyze", "security", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--offline" in out and "--threshold" in out


@pytest.mark.skipif(
    not _security_supports_offline(),
    reason="systemd-analyze security --offline needs systemd 250 or newer",
)
@pytest.mark.parametrize(
    "unit",
    [
        "abaco-export@dpd.service",
        "abaco-prune.service",
        "abaco-healthcheck.service",
        "abaco-upload.service",
        "abaco-report.service",
        LAKE_SERVICE,
    ],
)
def test_security_exposure_stays_low(verify_copy: Path, unit: str) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--threshold={round(SECURITY_THRESHOLD * 10)}",  # tenths: 0 to 100
            "--no-pager",
            str(verify_copy / unit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert level, result.stdout + result.stderr
    assert float(level[1]) <= SECURITY_THRESHOLD, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


# --- what the units say ----------------------------------------------------------------------


HARDENING = {
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "UMask": "0027",
    "User": "abaco",
    "Group": "abaco",
    "EnvironmentFile": "/etc/abaco/abaco.env",
    "WorkingDirectory": "/var/lib/abaco",
    "ReadWritePaths": "/var/lib/abaco",
}


@pytest.mark.parametrize("name", services())
def test_service_is_a_hardened_oneshot(name: str) -> None:
    unit = effective_service(name)
    assert value(unit, "Service", "Type") == "oneshot"
    timeout = value(unit, "Service", "TimeoutStartSec")
    assert timeout and 0 < seconds(timeout) <= 3600, f"{name}: TimeoutStartSec={timeout}"
    for key, expected in HARDENING.items():
        assert value(unit, "Service", key) == expected, f"{name}: {key}= is not {expected!r}"
    assert "@system-service" in values(unit, "Service", "SystemCallFilter")
    exec_start = values(unit, "Service", "ExecStart")
    assert len(exec_start) == 1 and exec_start[0].startswith(ABACO_BIN + " ")


def test_the_sandbox_applies_to_every_service_by_its_name_prefix() -> None:
    """systemd reads abaco-.service.d/ for every unit named abaco-*.service (and only those)."""
    assert DROPIN.is_file()
    assert all(name.startswith("abaco-") for name in services())
    for name in services():  # nothing in a unit may weaken the shared sandbox
        own = read_unit(SYSTEMD / name)
        overridden = {k for k, _ in own.get("Service", [])} & set(HARDENING)
        assert not overridden, f"{name} overrides {overridden}"


def test_export_retries_transient_failures_but_not_configuration_lock_or_upload() -> None:
    """5 is "exported, upload pending": the run is published; exporting again would not upload
    it (abaco-upload.timer does)."""
    unit = effective_service("abaco-export@.service")
    assert value(unit, "Service", "Restart") == "on-failure"
    prevented = set((value(unit, "Service", "RestartPreventExitStatus") or "").split())
    assert prevented == {"2", "4", "5"}
    assert "3" not in prevented and "1" not in prevented
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} export %i"
    burst = int(value(unit, "Unit", "StartLimitBurst") or 0)
    interval = seconds(value(unit, "Unit", "StartLimitIntervalSec") or "0")
    retry = seconds(value(unit, "Service", "RestartSec") or "0")
    # The retries of one run never outlast an hour, so the next hourly run can start.
    assert burst > 1 and (burst - 1) * retry < 3600 and interval < 3600


def test_healthcheck_warning_and_critical_are_not_unit_failures() -> None:
    unit = effective_service("abaco-healthcheck.service")
    assert set((value(unit, "Service", "SuccessExitStatus") or "").split()) == {"1", "2"}
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} healthcheck"
    assert value(unit, "Service", "Restart") in (None, "no")


def test_upload_catches_up_without_restarts_and_a_held_upload_lock_is_no_failure() -> None:
    """`abaco upload` uploads every run not yet uploaded (a no-op without a destination); the
    timer is its retry. Exit 4 (another process is uploading that dataset) is not a failure."""
    unit = effective_service("abaco-upload.service")
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} upload"
    assert value(unit, "Service", "Restart") in (None, "no")
    assert set((value(unit, "Service", "SuccessExitStatus") or "").split()) == {"4"}
    assert value(unit, "Unit", "Documentation") == "file:/opt/abaco/runbooks/upload-pending.md"
    assert (ROOT / "runbooks" / "upload-pending.md").is_file()
    assert "network-online.target" in (value(unit, "Unit", "After") or "")


def test_report_is_not_restarted_and_a_held_reports_lock_is_no_failure() -> None:
    """`abaco report` reads exported files only (no network); running it again cannot export a
    missing dataset, so there is no Restart=. Exit 4 (another process writes a report) is not a
    failure."""
    unit = effective_service("abaco-report.service")
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} report"
    assert value(unit, "Service", "Restart") in (None, "no")
    assert set((value(unit, "Service", "SuccessExitStatus") or "").split()) == {"4"}
    assert value(unit, "Service", "PrivateNetwork") == "yes"
    assert value(unit, "Unit", "Documentation") == "file:/opt/abaco/runbooks/report-failed.md"
    assert (ROOT / "runbooks" / "report-failed.md").is_file()


def test_lake_sync_is_not_restarted_and_a_held_lake_lock_is_no_failure() -> None:
    """`abaco lake sync` every 5 minutes: the timer is its retry. Exit 4 (another sync, here or on
    another host, holds the lake lock or the source's advisory lock) is not a failure; 1 (slot
    lost, schema change), 2 (no lake) and 3 (source down) are."""
    unit = effective_service(LAKE_SERVICE)
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} lake sync"
    assert value(unit, "Service", "Restart") in (None, "no")
    assert set((value(unit, "Service", "SuccessExitStatus") or "").split()) == {"4"}
    assert value(unit, "Unit", "Documentation") == "file:/opt/abaco/runbooks/lake-sync-failed.md"
    assert (ROOT / "runbooks" / "lake-sync-failed.md").is_file()
    assert "network-online.target" in (value(unit, "Unit", "After") or "")
    assert value(unit, "Service", "PrivateNetwork") in (None, "no")  # the source, the bucket


def test_lake_sync_may_read_proc_meminfo_and_keeps_the_rest_of_the_sandbox() -> None:
    """deltalake (delta-rs) reads /proc/meminfo before every write, MERGE and compaction and
    panics when it cannot ("You need to call System::refresh_memory before trying to get cgroup
    limits!"), which the shared ProcSubset=pid hides: the lake's own drop-in, applied after
    sandbox.conf, gives this one unit ProcSubset=all. Other processes stay hidden
    (ProtectProc=invisible), every other unit keeps ProcSubset=pid, and nothing else of the
    sandbox changes for the lake."""
    lake = effective_service(LAKE_SERVICE)
    assert value(lake, "Service", "ProcSubset") == "all", (
        "add deploy/systemd/abaco-lake-sync.service.d/<name after sandbox.conf>.conf with "
        "[Service] ProcSubset=all"
    )
    assert value(lake, "Service", "ProtectProc") == "invisible"
    for key, expected in HARDENING.items():
        assert value(lake, "Service", key) == expected, f"lake: {key}= is not {expected!r}"
    for name in services():
        if name != LAKE_SERVICE:
            assert value(effective_service(name), "Service", "ProcSubset") == "pid", name
    own = {
        k
        for path in dropins(LAKE_SERVICE)
        if path.parent.name != DROPIN.parent.name
        for k, _ in read_unit(path).get("Service", [])
    }
    assert own <= {"ProcSubset"}, f"the lake's drop-in changes more than ProcSubset=: {own}"


def test_lake_sync_budget_covers_max_seconds_within_the_interval() -> None:
    """A sync starts no batch after lake.max_seconds (240): the unit's TimeoutStartSec= is a
    little above that (the batch in progress, the connection's retries), and below the 5-minute
    interval, so a hung sync is stopped before the next is due. The cron line has the same
    budget."""
    budget = seconds(value(effective_service(LAKE_SERVICE), "Service", "TimeoutStartSec") or "0")
    max_seconds = LakeSettings().max_seconds
    assert max_seconds == 240
    assert max_seconds + 30 <= budget <= max_seconds + 120, budget
    assert budget <= 300
    _, _, command = _job("lake sync")
    assert re.search(r"timeout -k 1m (\d+)m ", command)[1] == str(round(budget / 60))  # type: ignore[index]


def test_every_service_names_an_existing_runbook() -> None:
    for name in services():
        docs = value(read_unit(SYSTEMD / name), "Unit", "Documentation") or ""
        page = docs.removeprefix("file:/opt/abaco/runbooks/")
        assert page != docs and (ROOT / "runbooks" / page).is_file(), f"{name}: {docs}"


def test_prune_uses_the_retention_of_the_bucket_lifecycle() -> None:
    unit = effective_service("abaco-prune.service")
    assert value(unit, "Service", "ExecStart") == f"{ABACO_BIN} prune --retention 90d"
    variables = (ROOT / "terraform/modules/export_bucket/variables.tf").read_text()
    block = variables[variables.index('variable "retention_days"') :]
    assert re.search(r"default\s*=\s*90\b", block.split("\n}\n", 1)[0])


# --- timers --------------------------------------------------------------------------------


def test_every_job_has_a_timer() -> None:
    targets = {timer_target(t) for t in timers()}
    assert targets == {
        *(f"abaco-export@{d}.service" for d in DATASET_TIMERS),
        "abaco-prune.service",
        "abaco-healthcheck.service",
        "abaco-upload.service",
        "abaco-report.service",
        LAKE_SERVICE,
    }
    for target in targets:
        assert unit_file_for(target).is_file(), f"no unit file for {target}"


@pytest.mark.parametrize("timer", timers())
def test_timer_is_persistent_randomized_and_installed(timer: str) -> None:
    unit = read_unit(SYSTEMD / timer)
    assert value(unit, "Timer", "Persistent") == "true"
    delay = value(unit, "Timer", "RandomizedDelaySec")
    assert delay, f"{timer} has no RandomizedDelaySec"
    assert value(unit, "Install", "WantedBy") == "timers.target"
    assert len(values(unit, "Timer", "OnCalendar")) == 1
    assert value(unit, "Timer", "OnCalendar").endswith(" UTC")  # type: ignore[union-attr]


def _calendar(timer: str) -> str:
    found = value(read_unit(SYSTEMD / timer), "Timer", "OnCalendar")
    assert found
    return found


def _delay(timer: str) -> float:
    return seconds(value(read_unit(SYSTEMD / timer), "Timer", "RandomizedDelaySec") or "0")


@needs_systemd_analyze
def test_dpd_runs_every_hour() -> None:
    times = elapses(_calendar(DATASET_TIMERS["dpd"]))
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {3600}
    assert _delay(DATASET_TIMERS["dpd"]) <= 15 * 60  # well inside the 2-hour freshness limit


@needs_systemd_analyze
@pytest.mark.parametrize("dataset", DAILY)
def test_daily_exports_are_ready_by_six_utc(dataset: str) -> None:
    timer = DATASET_TIMERS[dataset]
    times = elapses(_calendar(timer))
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {86400}
    start = times[0]
    budget = seconds(
        value(effective_service("abaco-export@.service"), "Service", "TimeoutStartSec") or "0"
    )
    latest_end = start.hour * 3600 + start.minute * 60 + _delay(timer) + budget
    assert latest_end <= 6 * 3600, f"{dataset} could finish after 06:00 UTC"


@needs_systemd_analyze
def test_prune_is_daily_and_done_before_the_daily_exports() -> None:
    times = elapses(_calendar("abaco-prune.timer"))
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {86400}
    budget = seconds(
        value(effective_service("abaco-prune.service"), "Service", "TimeoutStartSec") or "0"
    )
    prune_end = times[0].hour * 3600 + times[0].minute * 60 + _delay("abaco-prune.timer") + budget
    first_daily = min(elapses(_calendar(DATASET_TIMERS[d]))[0] for d in DAILY)
    assert prune_end <= first_daily.hour * 3600 + first_daily.minute * 60


@needs_systemd_analyze
def test_healthcheck_runs_every_five_minutes() -> None:
    times = elapses(_calendar("abaco-healthcheck.timer"), iterations=13)
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {300}
    assert _delay("abaco-healthcheck.timer") < 300


@needs_systemd_analyze
def test_upload_runs_every_fifteen_minutes_away_from_the_exports() -> None:
    """A failed upload is retried within 15 minutes (+ the delay), far below the 90 minutes
    after which a pending run fires AbacoUploadPending."""
    times = elapses(_calendar("abaco-upload.timer"), iterations=9)
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {900}
    assert _delay("abaco-upload.timer") < 300
    # Away from the exports, whose own upload does not wait for the upload lock: no upload
    # starts inside an export timer's start window (its minute of the hour + its delay).

    def minutes(start: datetime, delay: float) -> tuple[float, float]:
        begin = start.minute + start.second / 60
        return begin, begin + delay / 60

    uploads = [minutes(start, _delay("abaco-upload.timer")) for start in times[:4]]
    for timer in DATASET_TIMERS.values():
        begin, end = minutes(elapses(_calendar(timer), iterations=1)[0], _delay(timer))
        for upload_begin, upload_end in uploads:
            assert upload_end < begin or upload_begin > end, (timer, upload_begin, begin)
    rules = (ROOT / "monitoring/prometheus/abaco-alerts.yml").read_text(encoding="utf-8")
    assert re.search(r"abaco_upload_oldest_pending_timestamp_seconds\)? > 90 \* 60\b", rules)


@needs_systemd_analyze
def test_lake_sync_runs_every_five_minutes_apart_from_the_healthcheck() -> None:
    """Every 5 minutes (the slot keeps the source's WAL until a sync advances it), at other
    minutes than the health check's, with a delay well inside the interval."""
    times = elapses(_calendar(LAKE_TIMER), iterations=13)
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {300}
    assert 0 < _delay(LAKE_TIMER) <= 60
    assert value(read_unit(SYSTEMD / LAKE_TIMER), "Timer", "AccuracySec")
    health = elapses(_calendar("abaco-healthcheck.timer"), iterations=13)
    health_minutes = {t.minute for t in health}
    assert not health_minutes & {t.minute for t in times}
    assert timer_target(LAKE_TIMER) == LAKE_SERVICE


@needs_systemd_analyze
def test_report_runs_daily_after_the_daily_exports_are_ready() -> None:
    """The report of the newest kpi date needs every daily dataset of that date: it starts after
    the latest end of the daily exports (start + delay + budget) and after their 06:00 UTC ready
    time, outside the hourly dpd export's start window (dpd re-exports the date's files), and
    ends long before the next day's prune and exports."""
    times = elapses(_calendar("abaco-report.timer"))
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {86400}
    start = times[0].hour * 3600 + times[0].minute * 60 + times[0].second
    budget = seconds(
        value(effective_service("abaco-export@.service"), "Service", "TimeoutStartSec") or "0"
    )
    for dataset in DAILY:
        timer = DATASET_TIMERS[dataset]
        begin = elapses(_calendar(timer), iterations=1)[0]
        latest_end = begin.hour * 3600 + begin.minute * 60 + _delay(timer) + budget
        assert start >= latest_end, f"the report may start before {dataset} is exported"
    assert start >= 6 * 3600  # the daily exports' ready time
    delay = _delay("abaco-report.timer")
    assert 0 < delay <= 15 * 60
    dpd = elapses(_calendar(DATASET_TIMERS["dpd"]), iterations=1)[0]
    dpd_begin = dpd.minute * 60 + dpd.second
    dpd_end = dpd_begin + _delay(DATASET_TIMERS["dpd"])
    report_begin = times[0].minute * 60 + times[0].second
    assert report_begin > dpd_end and report_begin + delay < 3600 + dpd_begin
    report_budget = seconds(
        value(effective_service("abaco-report.service"), "Service", "TimeoutStartSec") or "0"
    )
    prune = elapses(_calendar("abaco-prune.timer"), iterations=1)[0]
    assert start + delay + report_budget < 86400 + prune.hour * 3600 + prune.minute * 60


# --- cron ----------------------------------------------------------------------------------


def cron_jobs() -> list[tuple[list[str], str, str]]:
    jobs = []
    for line in CRON.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or re.match(r"^[A-Z_]+=", stripped):
            continue
        fields = stripped.split(None, 6)
        jobs.append((fields[:5], fields[5], fields[6]))
    return jobs


def _job(command_fragment: str) -> tuple[list[str], str, str]:
    matches = [job for job in cron_jobs() if f"abaco {command_fragment}" in job[2]]
    assert len(matches) == 1, f"want one cron job running `abaco {command_fragment}`"
    return matches[0]


def test_cron_has_the_systemd_schedule() -> None:
    settings = dict(
        line.split("=", 1)
        for line in CRON.read_text(encoding="utf-8").splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    assert settings["SHELL"] == "/bin/sh"
    assert settings["PATH"].split(":")[0] == "/opt/abaco/bin"  # the wrapper that reads abaco.env
    assert "MAILTO" in settings
    minute, hour, *rest = _job("export dpd")[0]
    assert minute.isdigit() and hour == "*" and rest == ["*", "*", "*"]
    for dataset in DAILY:
        minute, hour, *rest = _job(f"export {dataset}")[0]
        assert hour == "4" and 30 <= int(minute) <= 45 and rest == ["*", "*", "*"]
    minute, hour, *rest = _job("prune --retention 90d")[0]
    assert hour == "3" and rest == ["*", "*", "*"]
    assert _job("healthcheck")[0] == ["*/5", "*", "*", "*", "*"]
    assert _job("upload")[0] == ["12-59/15", "*", "*", "*", "*"]
    assert _job("report")[0] == ["15", "6", "*", "*", "*"]  # after the daily exports (06:00)
    assert _job("lake sync")[0] == ["2-59/5", "*", "*", "*", "*"]
    assert len(cron_jobs()) == 9


@needs_systemd_analyze
def test_cron_lake_sync_runs_at_the_timers_minutes() -> None:
    times = elapses(_calendar(LAKE_TIMER), iterations=12)
    start, _, step = _job("lake sync")[0][0].partition("/")
    first, _, last = start.partition("-")
    assert set(range(int(first), int(last) + 1, int(step))) == {t.minute for t in times}


def test_every_cron_job_runs_as_abaco_under_flock_and_timeout_with_a_log() -> None:
    for _schedule, user, command in cron_jobs():
        assert user == "abaco"
        assert re.match(r"^flock -n (-E \d+ )?/run/lock/abaco-[a-z-]+\.lock timeout ", command)
        assert re.search(r">>/var/log/abaco/[a-z-]+\.log 2>&1", command)
        assert "%" not in command  # cron would turn it into a newline
    locks = [re.search(r"/run/lock/\S+", c)[0] for _, _, c in cron_jobs()]  # type: ignore[index]
    assert len(set(locks)) == len(locks), "each job needs its own lock"


@pytest.fixture
def cron_sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A stand-in `abaco` that records its arguments and exits with $STUB_EXIT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "abaco"
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$STUB_CALLS"\n'
        'if [ -n "${STUB_SLEEP:-}" ]; then sleep "$STUB_SLEEP"; fi\n'
        'exit "${STUB_EXIT:-0}"\n'
    )
    stub.chmod(0o755)
    (tmp_path / "log").mkdir()
    (tmp_path / "lock").mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STUB_CALLS": str(tmp_path / "calls"),
        "HOME": str(tmp_path),
    }
    return tmp_path, env


def _run_cron_command(
    command: str, sandbox: tuple[Path, dict[str, str]], **extra: str
) -> subprocess.CompletedProcess[str]:
    folder, env = sandbox
    command = command.replace("/run/lock/", f"{folder}/lock/").replace(
        "/var/log/abaco/", f"{folder}/log/"
    )
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which("flock") is None or shutil.which("timeout") is None,
    reason="flock (util-linux) or timeout (coreutils) is not installed",
)
def test_cron_lines_mail_only_on_failure(cron_sandbox: tuple[Path, dict[str, str]]) -> None:
    folder = cron_sandbox[0]
    _, _, export = _job("export dpd")
    ok = _run_cron_command(export, cron_sandbox, STUB_EXIT="0")
    assert ok.stdout == "" and ok.returncode == 0  # cron mails nothing
    assert (folder / "calls").read_text() == "export dpd\n"
    failed = _run_cron_command(export, cron_sandbox, STUB_EXIT="3")
    assert failed.stdout.count("\n") == 1  # one line for the mail
    assert "abaco export dpd failed (exit 3)" in failed.stdout
    assert "export-dpd.log" in failed.stdout

    _, _, health = _job("healthcheck")
    for code in ("0", "1", "2"):  # OK, WARNING, CRITICAL: results, carried by the metrics
        result = _run_cron_command(health, cron_sandbox, STUB_EXIT=code)
        assert result.stdout == "", f"healthcheck exit {code} should not mail"
    unknown = _run_cron_command(health, cron_sandbox, STUB_EXIT="3")
    assert "could not run (exit 3)" in unknown.stdout

    pending = _run_cron_command(export, cron_sandbox, STUB_EXIT="5")  # published, not uploaded
    assert "abaco export dpd failed (exit 5)" in pending.stdout

    _, _, upload = _job("upload")
    # 4: another process is uploading the dataset; 75: the previous upload still runs
    for code in ("0", "4", "75"):
        result = _run_cron_command(upload, cron_sandbox, STUB_EXIT=code)
        assert result.stdout == "", f"upload exit {code} should not mail"
    for code in ("1", "2", "5"):
        result = _run_cron_command(upload, cron_sandbox, STUB_EXIT=code)
        assert result.stdout.count("\n") == 1, result.stdout
        assert f"abaco upload failed (exit {code}); see /" in result.stdout
        assert "upload.log" in result.stdout
    assert (folder / "calls").read_text().count("upload\n") == 6

    _, _, report = _job("report")
    # 4: another process writes a report; 75: the previous report still runs
    for code in ("0", "4", "75"):
        result = _run_cron_command(report, cron_sandbox, STUB_EXIT=code)
        assert result.stdout == "", f"report exit {code} should not mail"
    for code in ("1", "2", "124"):  # a dataset of the date missing, configuration, timeout
        result = _run_cron_command(report, cron_sandbox, STUB_EXIT=code)
        assert result.stdout.count("\n") == 1, result.stdout
        assert f"abaco report failed (exit {code}); see /" in result.stdout
        assert "report.log" in result.stdout
    assert (folder / "calls").read_text().count("report\n") == 6

    _, _, lake = _job("lake sync")
    # 4: another sync (here or on another host) is consuming the slot; 75: the previous sync runs
    for code in ("0", "4", "75"):
        result = _run_cron_command(lake, cron_sandbox, STUB_EXIT=code)
        assert result.stdout == "", f"lake sync exit {code} should not mail"
    # the slot lost or a schema change, no lake yet, the source down, a hung sync
    for code in ("1", "2", "3", "124"):
        result = _run_cron_command(lake, cron_sandbox, STUB_EXIT=code)
        assert result.stdout.count("\n") == 1, result.stdout
        assert f"abaco lake sync failed (exit {code}); see /" in result.stdout
        assert "lake-sync.log" in result.stdout
    assert (folder / "calls").read_text().count("lake sync\n") == 7


@pytest.mark.skipif(
    shutil.which("flock") is None or shutil.which("timeout") is None,
    reason="flock (util-linux) or timeout (coreutils) is not installed",
)
def test_cron_lines_skip_a_held_lock_and_stop_a_hung_run(
    cron_sandbox: tuple[Path, dict[str, str]],
) -> None:
    folder = cron_sandbox[0]
    _, _, export = _job("export kpi")
    lock = folder / "lock" / "abaco-export-kpi.lock"
    with lock.open("a") as handle:  # a run still going holds the job's lock
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        skipped = _run_cron_command(export, cron_sandbox)
    assert "failed (exit 75)" in skipped.stdout
    assert not (folder / "calls").exists(), "abaco must not start while the lock is held"

    hung = export.replace("timeout -k 1m 45m", "timeout -k 1s 1s")
    assert hung != export
    result = _run_cron_command(hung, cron_sandbox, STUB_SLEEP="20")
    assert "failed (exit 124)" in result.stdout


# --- install script, wrapper, environment file ------------------------------------------------


def test_scripts_are_valid_shell() -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], check=True)
    subprocess.run(["sh", "-n", str(DEPLOY / "bin" / "abaco")], check=True)
    for script in (DEPLOY / "install.sh", DEPLOY / "bin" / "abaco"):
        assert os.access(script, os.X_OK), f"{script} is not executable"


def _dry_run(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


VENV_ID = r"abaco-\d+\.\d+\.\d+[^-\s]*-[0-9a-f]{12}"


def test_install_dry_run_with_systemd_puts_everything_in_place() -> None:
    out = _dry_run("--systemd")
    user_exists = subprocess.run(["id", "abaco"], capture_output=True, check=False).returncode == 0
    if not user_exists:
        assert re.search(r"useradd --system .*--shell /usr/sbin/nologin .*abaco$", out, re.M)
    if not Path("/var/lib/abaco").exists():
        assert "install -d -m 0750 -o abaco -g abaco /var/lib/abaco\n" in out
    venv = re.search(rf"-m venv (/opt/abaco/venvs/{VENV_ID})$", out, re.M)
    assert venv, out
    lock = re.escape(str(ROOT / "requirements" / "runtime.lock"))
    assert re.search(
        rf"^\+ {venv[1]}/bin/python -m pip install --quiet --require-hashes -r {lock}$", out, re.M
    )
    assert re.search(r"pip install --quiet --no-deps --no-build-isolation \S+$", out, re.M)
    assert f"{venv[1]}/bin/python -m pip check" in out
    assert "--upgrade" not in out  # nothing unpinned
    link = venv[1].removeprefix("/opt/abaco/")
    assert f"+ ln -sfn {link} /opt/abaco/venv.abaco-new\n" in out
    assert "+ mv -fT /opt/abaco/venv.abaco-new /opt/abaco/venv\n" in out
    if not Path("/etc/abaco/abaco.env").exists():
        assert re.search(
            r"install -m 0640 -o root -g abaco \S+/abaco\.env\.example /etc/abaco/abaco\.env$",
            out,
            re.M,
        )
    assert "/etc/systemd/system/abaco-.service.d/sandbox.conf" in out
    if not any(Path("/etc/systemd/system", t).exists() for t in timers()):
        # every timer but the lake's, which waits for ABACO_LAKE_ENABLED='1' (after lake init)
        lake_on = Path("/etc/abaco/abaco.env").exists() and "ABACO_LAKE_ENABLED='1'" in Path(
            "/etc/abaco/abaco.env"
        ).read_text(encoding="utf-8")
        wanted = set(timers()) if lake_on else set(timers()) - {LAKE_TIMER}
        enable = next(line for line in out.splitlines() if line.startswith("+ systemctl enable"))
        assert set(enable.split()[3:]) == wanted
        start = next(line for line in out.splitlines() if line.startswith("+ systemctl start"))
        assert set(start.split()[3:]) == wanted
        assert "systemctl daemon-reload" in out
        if not lake_on:
            assert f"{LAKE_TIMER} is installed, not enabled" in out
    assert f"/etc/systemd/system/{LAKE_SERVICE}" in out


def test_install_dry_run_with_cron() -> None:
    out = _dry_run("--cron")
    assert re.search(
        r"install -m 0644 -o root -g root \S+/abaco\.cron /etc/cron\.d/abaco\.abaco-new$", out, re.M
    )
    assert "+ mv -fT /etc/cron.d/abaco.abaco-new /etc/cron.d/abaco\n" in out
    assert re.search(
        r"install -m 0644 -o root -g root \S+/cron/abaco\.logrotate "
        r"/etc/logrotate\.d/abaco\.abaco-new$",
        out,
        re.M,
    )
    assert "systemctl" not in out


def test_environment_file_example_reads_the_same_in_systemd_and_sh() -> None:
    """systemd's EnvironmentFile= and sh agree on KEY='value' lines; nothing else is allowed."""
    lines = [
        line
        for line in (DEPLOY / "abaco.env.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"ABACO_[A-Z0-9_]+='[^']*'", line), line
    assert any(line.startswith("ABACO_DATABASE_URL=") for line in lines)


def _world_readable_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="abaco-wrapper-"))
    folder.chmod(0o755)
    return folder


def test_wrapper_loads_the_environment_file_and_runs_abaco() -> None:
    """bin/abaco as an ordinary user: reads the env file exactly, sets the runtime defaults."""
    folder = _world_readable_dir()
    try:
        env_file = folder / "abaco.env"
        url = "postgresql://u:p%40ss$word#x@db.example:5432/postgres?sslmode=require&x=1"
        env_file.write_text(f"ABACO_DATABASE_URL='{url}'\nABACO_LOG_FORMAT='json'\n")
        env_file.chmod(0o644)
        fake = folder / "fake-abaco"
        fake.write_text(
            "#!/bin/sh\n"
            'printf \'{"url": "%s", "log": "%s", "runtime": "%s", "config": "%s", '
            '"umask": "%s", "args": "%s"}\' '
            '"$ABACO_DATABASE_URL" "$ABACO_LOG_FORMAT" "$ABACO_RUNTIME_DIR" "$ABACO_CONFIG" '
            '"$(umask)" "$*"\n'
        )
        fake.chmod(0o755)
        command = [str(DEPLOY / "bin" / "abaco"), "export", "dpd", "--as-of", "2025-06-30"]
        if os.geteuid() == 0:  # run it as nobody: as root the wrapper switches to abaco
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {
            "PATH": "/usr/bin:/bin",
            "ABACO_ENV_FILE": str(env_file),
            "ABACO_BIN": str(fake),
        }
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert seen == {
            "url": url,
            "log": "json",
            "runtime": "/var/lib/abaco",
            "config": "/etc/abaco/abaco.toml",
            "umask": "0027",
            "args": "export dpd --as-of 2025-06-30",
        }
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="the switch to the abaco user happens only as root")
def test_wrapper_as_root_switches_to_the_abaco_user(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runuser = bin_dir / "runuser"
    runuser.write_text('#!/bin/sh\necho "runuser $*"\n')
    runuser.chmod(0o755)
    wrapper = str(DEPLOY / "bin" / "abaco")
    result = subprocess.run(
        [wrapper, "healthcheck", "--json"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"runuser -u abaco -- {wrapper} healthcheck --json"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running the wrapper as another user needs root and setpriv (util-linux)",
)
def test_wrapper_reads_an_environment_file_of_root_and_its_group() -> None:
    """/etc/abaco/abaco.env is root:abaco 0640 in a root:abaco 0750 folder: the abaco user reads
    it (the wrapper, cron) and cannot change it; systemd reads it as root."""
    gid = grp.getgrnam(_group_of("nobody")).gr_gid
    base = _world_readable_dir()
    try:
        folder = base / "etc-abaco"
        folder.mkdir()
        os.chown(folder, 0, gid)
        folder.chmod(0o750)
        env_file = folder / "abaco.env"
        env_file.write_text("ABACO_DATABASE_URL='postgresql://u:secret@db/x'\n")
        os.chown(env_file, 0, gid)
        env_file.chmod(0o640)
        fake = base / "fake-abaco"
        fake.write_text('#!/bin/sh\nprintf "%s" "$ABACO_DATABASE_URL"\n')
        fake.chmod(0o755)
        as_nobody = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "ABACO_ENV_FILE": str(env_file), "ABACO_BIN": str(fake)}
        result = subprocess.run(
            [*as_nobody, str(DEPLOY / "bin" / "abaco"), "healthcheck"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "postgresql://u:secret@db/x"
        write = subprocess.run(
            [*as_nobody, "sh", "-c", f"echo x >> {env_file}"], capture_output=True, check=False
        )
        assert write.returncode != 0, "the abaco user must not be able to change its environment"
    finally:
        shutil.rmtree(base)


# --- the dependency locks ---------------------------------------------------------------------

REQUIREMENTS = ROOT / "requirements"
RUNTIME_LOCK = REQUIREMENTS / "runtime.lock"
DEV_LOCK = REQUIREMENTS / "dev.lock"
# Libraries whose major versions change behaviour: pyproject.toml bounds them from above.
BOUNDED = ("pyarrow", "psycopg", "typer", "pydantic")
_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)"
    r"(?:\s*;\s*(?P<marker>.+?))?"
    r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)"
)


Pin = tuple[str, str, frozenset[str]]  # version, marker, sha256 hashes
# Where abaco runs (the venvs are Python 3.11 on Linux): a package the lock pins once per Python
# range (deprecated==1.3.1 ; python_full_version < '3.12', deprecated==3.0.1 ; >= '3.12') is read
# as the pin that applies there.
_TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "implementation_name": "cpython",
}


def lock_entries(path: Path) -> list[tuple[str, Pin]]:
    """Every pin of a `uv pip compile --generate-hashes` file, in order: (name, pin). Every
    requirement must be an exact pin with at least one hash; a name may repeat only with
    markers that differ."""
    entries: list[tuple[str, Pin]] = []
    for line in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _PIN.fullmatch(line.split("  #", 1)[0].strip())
        assert found, f"{path.name}: not a hashed exact pin: {line[:100]}"
        name = canonicalize_name(found["name"])
        hashes = frozenset(re.findall(r"sha256:([0-9a-f]{64})", found["hashes"]))
        entries.append((name, (found["version"], found["marker"] or "", hashes)))
    return entries


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> (version, marker, sha256 hashes): the lock's pins, one per name; of a name pinned
    once per marker (Python ranges), the pin whose marker holds for Python 3.11 on Linux."""
    pins: dict[str, Pin] = {}
    repeated: dict[str, list[Pin]] = {}
    for name, pin in lock_entries(path):
        repeated.setdefault(name, []).append(pin)
    for name, found in repeated.items():
        if len(found) == 1:
            pins[name] = found[0]
            continue
        markers = [marker for _, marker, _ in found]
        assert all(markers) and len(set(markers)) == len(markers), f"{path.name}: {name} twice"
        here = [pin for pin in found if Marker(pin[1]).evaluate(_TARGET)]
        assert len(here) == 1, f"{path.name}: {name}: {len(here)} pins apply to Python 3.11"
        pins[name] = here[0]
    return pins


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(*extras: str) -> list[Requirement]:
    project = _pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    build_in = (REQUIREMENTS / "build.in").read_text(encoding="utf-8").splitlines()
    specs += [line for line in build_in if line.strip() and not line.startswith("#")]
    return [Requirement(spec) for spec in specs]


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_lock_pins_every_package_with_hashes(lock: Path) -> None:
    pins = read_lock(lock)
    assert len(pins) > 10
    assert all(hashes for _, _, hashes in pins.values())
    assert "make lock" in lock.read_text(encoding="utf-8").split("\n", 3)[1]  # how to redo it


@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME_LOCK, ()), (DEV_LOCK, ("test", "dev"))], ids=["runtime", "dev"]
)
def test_lock_satisfies_pyproject(lock: Path, extras: tuple[str, ...]) -> None:
    """Every requirement of pyproject.toml (and of requirements/build.in) has a pin inside its
    range: a changed pyproject.toml without `make lock` fails here."""
    pins = read_lock(lock)
    environment = {"python_version": "3.11", "python_full_version": "3.11.0"}
    environment |= {"sys_platform": "linux", "platform_system": "Linux"}
    for requirement in _requirements(*extras):
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        assert name in pins, f"{lock.name} lacks {requirement} (make lock)"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name}: {name}=={version} is outside {requirement} (make lock)"
        )


def test_runtime_lock_is_the_runtime_part_of_the_dev_lock() -> None:
    """Tests run against exactly the versions and files that production installs."""
    dev: dict[str, list[Pin]] = {}
    for name, pin in lock_entries(DEV_LOCK):
        dev.setdefault(name, []).append(pin)
    for name, (version, marker, hashes) in lock_entries(RUNTIME_LOCK):
        found = dev.get(name)
        assert found is not None, f"{name}: in runtime.lock, not in dev.lock"
        # the same version and files under the same marker, or under none in the dev lock (a
        # test tool needs it on every platform: tzdata, Windows-only for psycopg, everywhere for
        # pandas)
        same = [pin for pin in found if pin[0::2] == (version, hashes)]
        assert same, f"{name}: runtime.lock {version}, dev {found}"
        assert any(pin[1] in (marker, "") for pin in same), f"{name}: markers {marker!r}, {same}"


def test_libraries_whose_majors_change_behaviour_are_bounded() -> None:
    runtime = {canonicalize_name(r.name): r for r in _requirements()}
    locked = read_lock(RUNTIME_LOCK)
    for name in BOUNDED:
        requirement = runtime[name]
        assert any(spec.operator in ("<", "<=") for spec in requirement.specifier), requirement
        version = Version(locked[name][0])
        # the next major (for a 0.x library, the next minor) is outside the range
        after = f"0.{version.minor + 1}" if version.major == 0 else f"{version.major + 1}.0"
        assert not requirement.specifier.contains(after), f"{requirement} allows {after}"


def test_build_tools_are_locked_too() -> None:
    """pip, setuptools and wheel come from the locks (no unpinned `pip install --upgrade pip`,
    no build dependency downloaded unchecked)."""
    build_requires = [Requirement(r) for r in _pyproject()["build-system"]["requires"]]
    for lock in (RUNTIME_LOCK, DEV_LOCK):
        pins = read_lock(lock)
        assert "pip" in pins
        for requirement in build_requires:
            assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)][0])


def _make(tmp_path: Path, *args: str, stamp_age: float | None = None) -> str:
    """`make -n ARGS` with the venv in tmp_path; its stamp `stamp_age` seconds older than the
    lock files (None: no venv at all)."""
    venv = tmp_path / "venv"
    if stamp_age is not None:
        (venv / "bin").mkdir(parents=True)
        newest = max(p.stat().st_mtime for p in (RUNTIME_LOCK, DEV_LOCK, ROOT / "pyproject.toml"))
        stamp = venv / "bin" / ".installed"
        stamp.touch()
        os.utime(stamp, (newest - stamp_age, newest - stamp_age))
    result = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_installs_the_dev_lock_with_hashes(tmp_path: Path) -> None:
    out = _make(tmp_path, "install")
    assert "pip install --quiet --require-hashes -r requirements/dev.lock" in out
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in out
    assert "--upgrade" not in out
    # the venv is rebuilt when a lock changes, and left alone when it has not
    assert "--require-hashes" in _make(tmp_path / "old", "install", stamp_age=60)
    assert "pip install" not in _make(tmp_path / "new", "install", stamp_age=-60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_audit_deps_and_lock(tmp_path: Path) -> None:
    audit = _make(tmp_path / "a", "audit-deps", stamp_age=-60)
    assert "pip-audit --strict" in audit and "requirements/runtime.lock" in audit
    lock = _make(tmp_path / "b", "lock", stamp_age=-60)
    assert lock.count("uv pip compile") == 2 and "--generate-hashes" in lock
    listed = subprocess.run(
        ["make", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True
    ).stdout
    assert "make lock" in listed and "make audit-deps" in listed


# --- install.sh for real, into a sandbox root ---------------------------------------------------
#
# ABACO_INSTALL_ROOT puts every file under a folder instead of /, ABACO_INSTALL_USER/GROUP name an
# existing account (nobody) instead of abaco, and a stand-in systemctl keeps unit state in files.
# The sandbox starts as a VM that an older release was installed on, with an operator's edits.

_FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl stand-in: state in $FAKE_SYSTEMD/enabled/<unit> and active/<unit>; each call is logged
# with where /opt/abaco/venv points and which venvs exist at that moment.
state=$FAKE_SYSTEMD
opt=$ABACO_INSTALL_ROOT/opt/abaco
mkdir -p "$state/enabled" "$state/active"
echo "$* | venv=$(readlink "$opt/venv") | venvs=$(ls "$opt/venvs" | tr '\\n' ' ')" >>"$state/calls"
case "$1" in
  is-active|is-enabled)
    dir=active; [ "$1" = is-enabled ] && dir=enabled
    shift; [ "$1" = --quiet ] && shift
    [ -e "$state/$dir/$1" ]; exit $? ;;
  enable) shift; for u in "$@"; do touch "$state/enabled/$u"; done ;;
  start) shift; for u in "$@"; do touch "$state/active/$u"; done ;;
  stop) shift; for u in "$@"; do rm -f "$state/active/$u"; done ;;
  daemon-reload) ;;
  *) echo "unexpected: systemctl $*" >&2; exit 1 ;;
esac
"""
OLD_VENV = "abaco-0.0.9-aaaaaaaaaaaa"  # what the link points at: kept as the previous venv
OLDER_VENV = "abaco-0.0.8-bbbbbbbbbbbb"  # removed
OPERATOR_ENV = "ABACO_DATABASE_URL='postgresql://exporter:s3cret@db.internal:5432/postgres'\n"
OPERATOR_TOML = '[health]\ndatasets = ["dpd"]\n'
OPERATOR_MAILTO = "MAILTO=data-oncall@example.com"
# Units this release adds to a VM an older release was installed on (in install.sh's order).
NEW_UNITS = (
    "abaco-healthcheck.timer",
    "abaco-upload.service",
    "abaco-upload.timer",
    "abaco-report.service",
    "abaco-report.timer",
    LAKE_SERVICE,
    LAKE_TIMER,
)
# The new timers install.sh enables at once: all but the lake's (ABACO_LAKE_ENABLED='1' first).
NEW_TIMERS = tuple(unit for unit in NEW_UNITS if unit.endswith(".timer") and unit != LAKE_TIMER)
LAKE_SWITCH = "ABACO_LAKE_ENABLED='1'\n"
LAKE_OFF_MARK = "# [off until ABACO_LAKE_ENABLED='1' in /etc/abaco/abaco.env] "


def _group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root with its type, mode, owner, size, times and link target."""
    seen: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            seen[str(path.relative_to(root))] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                target,
            )
    return seen


def _shipped_cron_with_operator_edits(comment: str = "#", lake: str = "") -> str:
    """The shipped cron file with the operator's MAILTO and the kpi job commented out; the lake
    sync line behind ``lake`` (install.sh's mark while the lake is off)."""
    lines = []
    for line in CRON.read_text(encoding="utf-8").splitlines():
        if line.startswith("MAILTO="):
            line = OPERATOR_MAILTO
        elif "abaco export kpi " in line:
            line = comment + line
        elif "abaco lake sync " in line and not line.startswith("#"):
            line = lake + line
        lines.append(line)
    return "\n".join(lines) + "\n"


def _sandbox_vm(base: Path, *, legacy_venv: bool = False) -> dict[str, Any]:
    """A root folder as an older release left it, plus the operator's edits."""
    root = base / "root"
    opt = root / "opt" / "abaco"
    for name in (OLDER_VENV, OLD_VENV):
        (opt / "venvs" / name / "bin").mkdir(parents=True)
        (opt / "venvs" / name / ".abaco-complete").touch()
    if legacy_venv:  # install.sh before venvs/: a plain folder
        (opt / "venv" / "bin").mkdir(parents=True)
    else:
        (opt / "venv").symlink_to(f"venvs/{OLD_VENV}")
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    state = base / "systemd"
    (state / "enabled").mkdir(parents=True)
    (state / "active").mkdir()
    for name in [*services(), *timers()]:
        if name in NEW_UNITS:
            continue  # what this release adds
        shutil.copy(SYSTEMD / name, units / name)
        if name.endswith(".timer") and name != "abaco-export-kpi.timer":  # kpi: disabled
            (state / "enabled" / name).touch()
            (state / "active" / name).touch()
    group = _group_of("nobody")
    etc = root / "etc" / "abaco"
    etc.mkdir(parents=True)
    env_file = etc / "abaco.env"
    env_file.write_text(OPERATOR_ENV)
    env_file.chmod(0o600)  # the old mode and owner
    os.chown(env_file, pwd.getpwnam("nobody").pw_uid, grp.getgrnam(group).gr_gid)
    (etc / "abaco.toml").write_text(OPERATOR_TOML)
    (root / "etc" / "cron.d").mkdir()
    (root / "etc" / "cron.d" / "abaco").write_text(_shipped_cron_with_operator_edits())
    fake_bin = base / "bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(_FAKE_SYSTEMCTL)
    (fake_bin / "useradd").write_text("#!/bin/sh\necho 'useradd must not run here' >&2\nexit 1\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "FAKE_SYSTEMD": str(state),
        "ABACO_INSTALL_ROOT": str(root),
        "ABACO_INSTALL_USER": "nobody",
        "ABACO_INSTALL_GROUP": group,
    }
    return {"root": root, "opt": opt, "state": state, "env": env, "group": group}


def _install_into(vm: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    calls = vm["state"] / "calls"
    calls.unlink(missing_ok=True)
    python = getattr(sys, "_base_executable", sys.executable)  # not this venv's python
    command = ["bash", str(DEPLOY / "install.sh"), *args, "--python", python]
    command += ["--metrics-reader", "abaco-test-no-such-user"]
    return subprocess.run(
        command,
        env=vm["env"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def _calls(vm: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(command, venv link target, venvs present) of each systemctl call of the last run."""
    path = vm["state"] / "calls"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        command, venv, venvs = line.split(" | ")
        found.append((command, venv.removeprefix("venv="), venvs.removeprefix("venvs=")))
    return found


needs_root_and_nobody = pytest.mark.skipif(
    os.geteuid() != 0
    or subprocess.run(["id", "nobody"], capture_output=True, check=False).returncode != 0
    or subprocess.run(["getent", "group", "adm"], capture_output=True, check=False).returncode,
    reason="install.sh sets owners: needs root, the user nobody and the group adm",
)


@pytest.fixture(scope="module")
def installed_vm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """install.sh run seven times on one sandbox VM: --systemd twice, then --cron twice; then the
    operator, having run `abaco lake init`, writes ABACO_LAKE_ENABLED='1' in abaco.env, and it
    runs --systemd twice and --cron once more."""
    vm = _sandbox_vm(tmp_path_factory.mktemp("vm"))
    vm["runs"], vm["calls"], vm["after"], vm["cron"] = [], [], [], []
    cron = vm["root"] / "etc" / "cron.d" / "abaco"
    for number, mode in enumerate(
        ("--systemd", "--systemd", "--cron", "--cron", "--systemd", "--systemd", "--cron")
    ):
        if number == 4:
            env_file = vm["root"] / "etc" / "abaco" / "abaco.env"
            with env_file.open("a", encoding="utf-8") as handle:
                handle.write(LAKE_SWITCH)
        result = _install_into(vm, mode)
        assert result.returncode == 0, result.stdout + result.stderr
        vm["runs"].append(result)
        vm["calls"].append(_calls(vm))
        vm["after"].append(_snapshot(vm["root"]))
        vm["cron"].append(cron.read_text(encoding="utf-8") if cron.exists() else None)
    return vm


@pytest.mark.slow
@needs_root_and_nobody
def test_install_builds_a_new_venv_from_the_lock_and_switches_the_link(
    installed_vm: dict[str, Any],
) -> None:
    opt = installed_vm["opt"]
    target = os.readlink(opt / "venv")
    assert re.fullmatch(f"venvs/{VENV_ID}", target), target
    new = target.removeprefix("venvs/")
    # the new one and the previous one (a rollback is one link switch); the older one is gone
    assert sorted(p.name for p in (opt / "venvs").iterdir()) == sorted([new, OLD_VENV])
    version = subprocess.run(
        [str(opt / "venv" / "bin" / "abaco"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.split()[-1] == _pyproject()["project"]["version"]
    listed = subprocess.run(
        [str(opt / "venv" / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
    locked = {  # what applies on Linux (colorama and tzdata are for Windows only)
        name: version
        for name, (version, marker, _) in read_lock(RUNTIME_LOCK).items()
        if not marker or Marker(marker).evaluate({"sys_platform": "linux"})
    }
    assert installed.pop("abaco") == _pyproject()["project"]["version"]
    assert installed == locked  # exactly the lock: nothing more, nothing else
    leftovers = [p for p in installed_vm["root"].rglob("*.abaco-new")]
    assert not leftovers


@pytest.mark.slow
@needs_root_and_nobody
def test_install_stops_the_timers_around_the_switch_and_keeps_a_disabled_one_off(
    installed_vm: dict[str, Any],
) -> None:
    calls = installed_vm["calls"][0]
    commands = [c for c, _, _ in calls if not c.startswith("is-")]
    stop = next(c for c in calls if c[0].startswith("stop "))
    start = next(c for c in calls if c[0].startswith("start "))
    new = os.readlink(installed_vm["opt"] / "venv")
    active_before = {
        t for t in timers() if t not in ("abaco-export-kpi.timer", *NEW_TIMERS, LAKE_TIMER)
    }
    # stopped before the new venv existed, with the link still on the old one
    assert set(stop[0].split()[1:]) == active_before
    assert stop[1] == f"venvs/{OLD_VENV}" and new.removeprefix("venvs/") not in stop[2]
    # started again once the link points at the new venv: the ones that ran, and the new timers
    assert start[1] == new
    assert set(start[0].split()[1:]) == active_before | set(NEW_TIMERS)
    assert commands == [
        stop[0],
        "daemon-reload",
        "enable " + " ".join(NEW_TIMERS),
        start[0],
    ]
    state = installed_vm["state"]
    assert not (state / "enabled" / "abaco-export-kpi.timer").exists()  # the operator's choice
    assert not (state / "active" / "abaco-export-kpi.timer").exists()
    for unit in [*services(), *timers()]:
        installed = installed_vm["root"] / "etc" / "systemd" / "system" / unit
        assert installed.read_bytes() == (SYSTEMD / unit).read_bytes()
    for dropin in SYSTEMD.glob("*.d/*.conf"):
        installed = installed_vm["root"] / "etc/systemd/system" / dropin.parent.name / dropin.name
        assert installed.read_bytes() == dropin.read_bytes()


@pytest.mark.slow
@needs_root_and_nobody
def test_install_schedules_the_lake_only_once_the_operator_switches_it_on(
    installed_vm: dict[str, Any],
) -> None:
    """Without ABACO_LAKE_ENABLED='1' the lake's unit and timer are installed but never enabled
    nor started, and its cron line is written commented out behind install.sh's mark; the first
    run after the operator writes the switch enables and starts the timer and nothing else, the
    next changes nothing, and --cron makes the line active again, the operator's own edits
    kept."""
    state = installed_vm["state"]
    first = installed_vm["runs"][0].stdout
    assert f"{LAKE_TIMER} is installed, not enabled" in first
    for calls in installed_vm["calls"][:4]:
        assert not [c for c, _, _ in calls if LAKE_TIMER in c and not c.startswith("is-")]
    lake_off = _shipped_cron_with_operator_edits(comment="# ", lake=LAKE_OFF_MARK)
    assert installed_vm["cron"][2] == installed_vm["cron"][3] == lake_off
    assert "the lake sync line is commented out" in installed_vm["runs"][2].stdout
    # the switch: only the lake's timer is enabled and started, with no reload
    switched = [c for c, _, _ in installed_vm["calls"][4] if not c.startswith("is-")]
    assert switched == [f"enable {LAKE_TIMER}", f"start {LAKE_TIMER}"]
    assert (state / "enabled" / LAKE_TIMER).exists() and (state / "active" / LAKE_TIMER).exists()
    before, after = installed_vm["after"][3], installed_vm["after"][4]
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == {"etc/abaco/abaco.env"}  # the operator's edit; install.sh wrote nothing
    assert all(c.startswith("is-") for c, _, _ in installed_vm["calls"][5])
    assert installed_vm["after"][5] == installed_vm["after"][4]
    assert installed_vm["cron"][6] == _shipped_cron_with_operator_edits(comment="# ")
    assert "the lake sync line is commented out" not in installed_vm["runs"][6].stdout
    assert not (state / "enabled" / "abaco-export-kpi.timer").exists()


@pytest.mark.slow
@needs_root_and_nobody
def test_install_twice_changes_nothing(installed_vm: dict[str, Any]) -> None:
    systemd_first, systemd_second, cron_first, cron_second = installed_vm["after"][:4]
    assert systemd_second == systemd_first
    assert cron_second == cron_first
    # the second run only asked systemd; it stopped, started and reloaded nothing
    assert all(c.startswith("is-") for c, _, _ in installed_vm["calls"][1])
    assert "already installed" in installed_vm["runs"][1].stdout
    # the cron runs reused the venv and the link as they were, and called no systemctl
    program = {k: v for k, v in systemd_first.items() if k.startswith("opt/abaco/")}
    assert program == {k: v for k, v in cron_second.items() if k.startswith("opt/abaco/")}
    assert not installed_vm["calls"][2] and not installed_vm["calls"][3]


@pytest.mark.slow
@needs_root_and_nobody
def test_install_keeps_the_operators_environment_file_and_fixes_its_owner(
    installed_vm: dict[str, Any],
) -> None:
    etc = installed_vm["root"] / "etc" / "abaco"
    env_file = etc / "abaco.env"
    assert env_file.read_text() == OPERATOR_ENV + LAKE_SWITCH  # the operator's, then the switch
    st = env_file.stat()
    assert (st.st_mode & 0o7777, st.st_uid) == (0o640, 0)
    assert grp.getgrgid(st.st_gid).gr_name == installed_vm["group"]
    assert (etc / "abaco.toml").read_text() == OPERATOR_TOML
    assert (etc.stat().st_mode & 0o7777, etc.stat().st_uid) == (0o750, 0)


@pytest.mark.slow
@needs_root_and_nobody
def test_install_keeps_mailto_and_the_jobs_the_operator_commented_out(
    installed_vm: dict[str, Any],
) -> None:
    cron = installed_vm["root"] / "etc" / "cron.d" / "abaco"
    assert cron.read_text() == _shipped_cron_with_operator_edits(comment="# ")  # the lake on
    assert installed_vm["cron"][3] == _shipped_cron_with_operator_edits(
        comment="# ", lake=LAKE_OFF_MARK
    )
    assert (cron.stat().st_mode & 0o7777, cron.stat().st_uid) == (0o644, 0)
    logrotate = installed_vm["root"] / "etc" / "logrotate.d" / "abaco"
    assert logrotate.read_bytes() == (DEPLOY / "cron" / "abaco.logrotate").read_bytes()
    assert "MAILTO=data-oncall@example.com" in installed_vm["runs"][2].stdout


@needs_root_and_nobody
def test_install_dry_run_in_a_sandbox_changes_nothing(tmp_path: Path) -> None:
    """--dry-run on a VM with a venv from before venvs/: prints the move aside, the switch, the
    removal of the stale venvs and the owner fix of abaco.env, and touches nothing."""
    vm = _sandbox_vm(tmp_path, legacy_venv=True)
    before = _snapshot(vm["root"])
    for mode in ("--systemd", "--cron"):
        result = _install_into(vm, mode, "--dry-run")
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        opt = vm["opt"]
        assert re.search(rf"^\+ mv -T {opt}/venv {opt}/venvs/legacy-\S+$", out, re.M)
        assert f"+ mv -fT {opt}/venv.abaco-new {opt}/venv\n" in out
        assert f"+ rm -rf {opt}/venvs/{OLDER_VENV}\n" in out
        assert f"+ chmod 0640 {vm['root']}/etc/abaco/abaco.env\n" in out
        assert f"+ chown root:{vm['group']} {vm['root']}/etc/abaco/abaco.env\n" in out
        assert "--require-hashes -r" in out
        assert not [c for c, _, _ in _calls(vm) if not c.startswith("is-")]
    assert _snapshot(vm["root"]) == before


def test_install_refuses_a_package_it_cannot_fingerprint(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--dry-run", "--package", "abaco==0.1.0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "a wheel (.whl) or a source folder" in result.stderr


# --- the sandbox does not break a real export --------------------------------------------------
#
# Three of the sandbox's restrictions could break a Python job that loads native extensions
# (pyarrow, psycopg's libpq): MemoryDenyWriteExecute=, SystemCallFilter= and ProcSubset=pid.
# Each test runs `abaco db seed` and `abaco export dpd` (CSV, Parquet, JSON) against the test
# server under the kernel mechanism systemd uses for one of them (plus UMask=0027 and a private
# TMPDIR), in layers: [unshare + /proc subset=pid] [seccomp filter] [PR_SET_MDWE] abaco.

_MDWE_LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
os.umask(0o027)
os.execv(sys.executable, [sys.executable, "-m", "abaco_cli", *sys.argv[1:]])
"""

# SystemCallFilter=@system-service, SystemCallFilter=~@privileged @resources,
# SystemCallErrorNumber=EPERM, with the groups as this systemd defines them; runs under the
# system python (python3-seccomp), then execs the given command with the filter in place.
_SECCOMP_LAUNCHER = """
import errno, os, subprocess, sys
import seccomp
listing = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
groups, current = {}, None
for line in listing.splitlines():
    item = line.strip()
    if line.startswith("@"):
        current = groups.setdefault(item, [])
    elif current is not None and item and not item.startswith("#"):
        current.append(item)
def expand(name, seen):
    if not name.startswith("@"):
        return {name}
    found = set()
    for member in groups.get(name, []):
        if member not in seen:
            seen.add(member)
            found |= expand(member, seen)
    return found
allowed = expand("@system-service", set())
allowed -= expand("@privileged", set()) | expand("@resources", set())
assert "setpriority" not in allowed and "openat" in allowed
rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in sorted(allowed):
    try:
        rules.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError):  # a name this architecture does not have
        pass
rules.load()
os.execv(sys.argv[1], sys.argv[1:])
"""

_PROC_SUBSET = "mount -t proc -o subset=pid,hidepid=invisible proc /proc"


def _kernel_has_mdwe() -> bool:
    """PR_SET_MDWE (Linux 6.3+): the kernel's form of MemoryDenyWriteExecute=; probed in a child."""
    probe = (
        "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
        "sys.exit(0 if libc.prctl(65, 1, 0, 0, 0) == 0 else 1)"
    )
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def _seccomp_python() -> str | None:
    """A python with libseccomp's bindings (Debian: python3-seccomp), if there is one."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and shutil.which("systemd-analyze"):
            probe = [candidate, "-c", "import seccomp"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                return candidate
    return None


def _can_mount_proc_subset() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--pid", "--fork", "sh", "-c"]
    probe.append(f"{_PROC_SUBSET} && test ! -e /proc/cpuinfo")
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _export_in_sandbox(
    pg_server: Server,
    template_db: str,
    tmp_path: Path,
    *,
    seccomp_python: str | None = None,
    proc_subset: bool = False,
) -> None:
    prefix: list[str] = []
    if seccomp_python:
        prefix = [seccomp_python, "-c", _SECCOMP_LAUNCHER, sys.executable]
    else:
        prefix = [sys.executable]
    prefix += ["-c", _MDWE_LAUNCHER]

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [*prefix, *args]
        if proc_subset:
            unshare = ["unshare", "--mount", "--pid", "--fork", "sh", "-c"]
            command = [*unshare, f"{_PROC_SUBSET} && exec {shlex.join(command)}"]
        return subprocess.run(
            command,
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    name = f"abaco_sandbox_{os.getpid()}_{tmp_path.name}"
    dsn = pg_server.create_database(name, template=template_db)
    try:
        private_tmp = tmp_path / "tmp"  # PrivateTmp=
        private_tmp.mkdir()
        env = {
            "ABACO_DATABASE_URL": dsn,
            "ABACO_RUNTIME_DIR": str(tmp_path / "runtime"),
            "TMPDIR": str(private_tmp),
        }
        seed = run(["db", "seed", "--loans", "400", "--seed", "7", "--through", "2025-06-30"], env)
        assert seed.returncode == 0, seed.stderr
        export = run(
            ["export", "dpd", "--as-of", "2025-06-30", "-f", "csv,parquet,json", "--json"], env
        )
        assert export.returncode == 0, export.stderr
        files = json.loads(export.stdout)["files"]
        assert {f["format"] for f in files} == {"csv", "parquet", "json"}
        for entry in files:
            path = Path(entry["path"])
            assert path.is_file() and path.stat().st_size == entry["bytes"]
            assert path.stat().st_mode & 0o007 == 0  # UMask=0027: nothing for other users
    finally:
        pg_server.drop_database(name)


needs_mdwe = pytest.mark.skipif(
    not _kernel_has_mdwe(), reason="this kernel has no PR_SET_MDWE (Linux 6.3 or newer)"
)


@needs_mdwe
def test_export_runs_under_memory_deny_write_execute(
    pg_server: Server, template_db: str, tmp_path: Path
) -> None:
    _export_in_sandbox(pg_server, template_db, tmp_path)


@needs_mdwe
@pytest.mark.skipif(
    _seccomp_python() is None,
    reason="libseccomp's Python bindings are not installed (Debian package python3-seccomp)",
)
def test_export_runs_under_the_system_call_filter(
    pg_server: Server, template_db: str, tmp_path: Path
) -> None:
    _export_in_sandbox(pg_server, template_db, tmp_path, seccomp_python=_seccomp_python())


@needs_mdwe
@pytest.mark.skipif(
    not _can_mount_proc_subset(),
    reason="mounting /proc with subset=pid needs root and unshare (util-linux)",
)
def test_export_runs_with_proc_subset_pid(
    pg_server: Server, template_db: str, tmp_path: Path
) -> None:
    _export_in_sandbox(pg_server, template_db, tmp_path, proc_subset=True)


# The upload's libraries under the same mechanisms: google-cloud-storage (with google-crc32c's C
# extension and google-auth), boto3 (botocore, urllib3, OpenSSL) put and get an object on a local
# S3 (moto) and a local GCS (gcp-storage-emulator) from a child process under PR_SET_MDWE, the
# seccomp filter when its bindings are there, and /proc subset=pid when this runs as root.

_MDWE_PYTHON = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
os.umask(0o027)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

_UPLOAD_IN_SANDBOX = """
import os
import google_crc32c
import boto3
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
assert google_crc32c.implementation == "c", google_crc32c.implementation
body = b"as_of_date,loans\\r\\n2025-06-30,400\\r\\n" * 4096
s3 = boto3.client("s3", endpoint_url=os.environ["SANDBOX_S3"], region_name="us-east-1",
                  aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
s3.put_object(Bucket="abaco-sandbox", Key="exports/dpd/x.csv", Body=body)
assert s3.get_object(Bucket="abaco-sandbox", Key="exports/dpd/x.csv")["Body"].read() == body
gcs = storage.Client(project="sandbox", credentials=AnonymousCredentials())
blob = gcs.bucket("abaco-sandbox").blob("exports/dpd/x.csv")
blob.upload_from_string(body, checksum="md5")
assert blob.download_as_bytes() == body
print("uploaded", len(body))
"""


@pytest.fixture
def local_object_stores() -> Any:
    """moto's S3 and gcp-storage-emulator on free local ports, each with a bucket abaco-sandbox."""
    import socket

    import boto3
    from gcp_storage_emulator.server import create_server
    from moto.server import ThreadedMotoServer

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    s3_port, gcs_port = free_port(), free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    s3.start()
    gcs = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket="abaco-sandbox")
    gcs.start()
    try:
        admin = boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name="us-east-1",
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
        )
        admin.create_bucket(Bucket="abaco-sandbox")
        yield {"s3": f"http://127.0.0.1:{s3_port}", "gcs": f"http://127.0.0.1:{gcs_port}"}
    finally:
        gcs.stop()
        s3.stop()


@needs_mdwe
def test_uploads_run_under_the_sandbox(local_object_stores: dict[str, str], tmp_path: Path) -> None:
    seccomp_python = _seccomp_python()
    command = [sys.executable, "-c", _MDWE_PYTHON, "-c", _UPLOAD_IN_SANDBOX]
    if seccomp_python:
        command = [seccomp_python, "-c", _SECCOMP_LAUNCHER, *command]
    if _can_mount_proc_subset():
        unshare = ["unshare", "--mount", "--pid", "--fork", "sh", "-c"]
        command = [*unshare, f"{_PROC_SUBSET} && exec {shlex.join(command)}"]
    private_tmp = tmp_path / "tmp"  # PrivateTmp=
    private_tmp.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "GOOGLE_", "STORAGE_EMULATOR", "ABACO_"))
    }
    env |= {
        "HOME": str(tmp_path),
        "TMPDIR": str(private_tmp),
        "SANDBOX_S3": local_object_stores["s3"],
        "STORAGE_EMULATOR_HOST": local_object_stores["gcs"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("uploaded ")


# The lake's libraries under its unit's effective sandbox: deltalake (delta-rs, Rust: tokio,
# DataFusion, object_store over HTTP) writes a Delta table with decimal128 amounts and commit
# metadata, MERGEs a batch into it and reads it back, in a folder and on moto's S3, under
# PR_SET_MDWE, the seccomp filter when its bindings are there, and /proc mounted with
# subset=pid when the lake unit's effective ProcSubset= is pid (the shared sandbox's value).
# Read back with DataFusion (QueryBuilder), not to_pyarrow_table(): with deltalake 1.6 and
# pyarrow, a process that scanned a table through pyarrow.dataset aborts at exit now and then
# ("terminate called without an active exception"; apache/arrow#34314).

_LAKE_IN_SANDBOX = """
import os, sys
from datetime import date
from decimal import Decimal
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake

schema = pa.schema([("loan_id", pa.string()), ("principal", pa.decimal128(18, 2)),
                    ("disbursement_date", pa.date32())])
initial = pa.table({"loan_id": ["L1", "L2", "L3"],
                    "principal": [Decimal("1000.00"), Decimal("9999999999999999.99"), None],
                    "disbursement_date": [date(2025, 5, 1)] * 3}, schema=schema)
batch = pa.table({"loan_id": ["L2", "L3", "L4"], "_op": ["update", "delete", "insert"],
                  "principal": [Decimal("0.01"), None, Decimal("-9999999999999999.99")],
                  "disbursement_date": [date(2025, 6, 30)] * 3})
columns = ("loan_id", "principal", "disbursement_date")
expected = [("L1", Decimal("1000.00"), date(2025, 5, 1)),
            ("L2", Decimal("0.01"), date(2025, 6, 30)),
            ("L4", Decimal("-9999999999999999.99"), date(2025, 6, 30))]

def lake(uri, options):
    write_deltalake(uri, initial, storage_options=options,
                    commit_properties=CommitProperties(custom_metadata={"abaco.lsn": "0/16B3748"}))
    (DeltaTable(uri, storage_options=options)
     .merge(batch, "t.loan_id = s.loan_id", source_alias="s", target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"abaco.lsn": "0/16B3800"}))
     .when_matched_delete("s._op = 'delete'")
     .when_matched_update({c: f"s.{c}" for c in columns[1:]})
     .when_not_matched_insert({c: f"s.{c}" for c in columns}, "s._op <> 'delete'")
     .execute())
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1 and table.history(1)[0]["abaco.lsn"] == "0/16B3800"
    found = pa.table(QueryBuilder().register("t", table).execute(
        "SELECT loan_id, principal, disbursement_date FROM t ORDER BY loan_id").read_all())
    assert found.schema.field("principal").type == pa.decimal128(18, 2), found.schema
    rows = [tuple(row.values()) for row in found.to_pylist()]
    assert rows == expected, rows
    return len(rows)

print("folder", lake(sys.argv[1], None))
s3 = {"AWS_ENDPOINT_URL": os.environ["SANDBOX_S3"], "AWS_REGION": "us-east-1",
      "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",
      "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
print("s3", lake("s3://abaco-sandbox/lake/tables/core_banking.loans", s3))
"""


def _under_the_lake_sandbox(command: list[str]) -> list[str]:
    """``command`` under the lake unit's effective sandbox, as far as this host can build it."""
    command = [sys.executable, "-c", _MDWE_PYTHON, *command]
    seccomp_python = _seccomp_python()
    if seccomp_python:
        command = [seccomp_python, "-c", _SECCOMP_LAUNCHER, *command]
    subset = value(effective_service(LAKE_SERVICE), "Service", "ProcSubset")
    if subset == "pid" and _can_mount_proc_subset():
        unshare = ["unshare", "--mount", "--pid", "--fork", "sh", "-c"]
        command = [*unshare, f"{_PROC_SUBSET} && exec {shlex.join(command)}"]
    return command


@needs_mdwe
def test_the_lake_libraries_run_under_the_lake_units_sandbox(
    local_object_stores: dict[str, str], tmp_path: Path
) -> None:
    command = _under_the_lake_sandbox(["-c", _LAKE_IN_SANDBOX, str(tmp_path / "loans")])
    private_tmp = tmp_path / "tmp"  # PrivateTmp=
    private_tmp.mkdir()
    env = {
        key: val
        for key, val in os.environ.items()
        if not key.startswith(("AWS_", "GOOGLE_", "STORAGE_EMULATOR", "ABACO_"))
    }
    env |= {
        "HOME": str(tmp_path),
        "TMPDIR": str(private_tmp),
        "SANDBOX_S3": local_object_stores["s3"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.split() == ["folder", "3", "s3", "3"]


@needs_mdwe
def test_lake_init_and_sync_run_under_the_lake_units_sandbox(
    pg_server: Server, template_db: str, tmp_path: Path
) -> None:
    """The real thing: `abaco lake init` and `abaco lake sync` against the test server, into a
    folder, under the same layers; the Delta table then holds the source's loans."""
    from decimal import Decimal

    import psycopg
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    name = f"abaco_lake_sandbox_{os.getpid()}"
    slot = f"abaco_lake_sandbox_{os.getpid()}"
    dsn = pg_server.create_database(name, template=template_db)
    private_tmp = tmp_path / "tmp"  # PrivateTmp=
    private_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    env |= {
        "ABACO_DATABASE_URL": dsn,
        "ABACO_RUNTIME_DIR": str(tmp_path / "runtime"),
        "ABACO_LAKE__DESTINATION": str(tmp_path / "dest"),
        "ABACO_LAKE__SLOT": slot,
        "ABACO_LAKE__PUBLICATION": slot,
        "TMPDIR": str(private_tmp),
    }

    def abaco(*args: str) -> subprocess.CompletedProcess[str]:
        command = _under_the_lake_sandbox(["-m", "abaco_cli", *args])
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO core_banking.customers (customer_id) VALUES ('C1')")
            conn.execute(
                "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date,"
                " principal) VALUES ('L1', 'C1', '2025-05-01', 1000.00)"
            )
        init = abaco("lake", "init")
        assert init.returncode == 0, init.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date,"
                " principal) VALUES ('L2', 'C1', '2025-06-30', 9999999999999999.99)"
            )
            conn.execute("UPDATE core_banking.loans SET principal = 0.01 WHERE loan_id = 'L1'")
        sync = abaco("lake", "sync", "--json")
        assert sync.returncode == 0, sync.stderr
        table = DeltaTable(str(tmp_path / "dest" / "lake" / "tables" / "core_banking.loans"))
        query = "SELECT loan_id, principal FROM t ORDER BY loan_id"
        found = QueryBuilder().register("t", table).execute(query).read_all()
        rows = [tuple(r.values()) for r in pa.table(found).to_pylist()]
        assert rows == [("L1", Decimal("0.01")), ("L2", Decimal("9999999999999999.99"))]
    finally:
        # A logical slot is dropped from its own database, and must go before the database.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (slot,),
            )
        pg_server.drop_database(name)
