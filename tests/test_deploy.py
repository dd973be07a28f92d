"""deploy/: the systemd units and timers, the cron file, the install script, the wrapper.

systemd's own tools judge the units (`systemd-analyze verify`, `security --offline`,
`calendar`); the cron lines run for real under /bin/sh with a stand-in abaco; install.sh runs with
--dry-run; and a real export runs under the kernel mechanisms behind the sandbox's riskiest
settings (PR_SET_MDWE for MemoryDenyWriteExecute=, a seccomp filter built from systemd's own
syscall groups for SystemCallFilter=, a /proc mounted with subset=pid for ProcSubset=pid).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

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


def effective_service(name: str) -> Unit:
    """A service as systemd loads it: the file, then the abaco- prefix drop-in."""
    return read_unit(SYSTEMD / name, DROPIN)


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
    "unit", ["abaco-export@dpd.service", "abaco-prune.service", "abaco-healthcheck.service"]
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


def test_export_retries_transient_failures_but_not_configuration_or_lock() -> None:
    unit = effective_service("abaco-export@.service")
    assert value(unit, "Service", "Restart") == "on-failure"
    prevented = set((value(unit, "Service", "RestartPreventExitStatus") or "").split())
    assert {"2", "4"} <= prevented
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
    assert len(cron_jobs()) == 6


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


def test_install_dry_run_with_systemd_puts_everything_in_place() -> None:
    out = _dry_run("--systemd")
    user_exists = subprocess.run(["id", "abaco"], capture_output=True, check=False).returncode == 0
    if not user_exists:
        assert re.search(r"useradd --system .*--shell /usr/sbin/nologin .*abaco$", out, re.M)
    assert "install -d -m 0750 -o abaco -g abaco /var/lib/abaco\n" in out
    assert re.search(r"-m venv /opt/abaco/venv$", out, re.M)
    assert re.search(r"pip install --quiet --upgrade \S+$", out, re.M)
    if not Path("/etc/abaco/abaco.env").exists():
        assert re.search(
            r"install -m 0600 -o abaco -g abaco \S+/abaco\.env\.example /etc/abaco/abaco\.env$",
            out,
            re.M,
        )
    assert "/etc/systemd/system/abaco-.service.d/sandbox.conf" in out
    enable = next(line for line in out.splitlines() if "systemctl enable --now" in line)
    assert set(enable.split()[4:]) == set(timers())
    assert "systemctl daemon-reload" in out


def test_install_dry_run_with_cron() -> None:
    out = _dry_run("--cron")
    assert re.search(r"install -m 0644 \S+/cron/abaco\.cron /etc/cron\.d/abaco$", out, re.M)
    assert re.search(
        r"install -m 0644 \S+/cron/abaco\.logrotate /etc/logrotate\.d/abaco$", out, re.M
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
