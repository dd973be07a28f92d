"""Who started this process: user, uid, host, and whether a terminal, cron or systemd did."""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path
from typing import Any

_CRON_NAMES = frozenset({"cron", "crond", "anacron", "busybox-crond", "fcron"})


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return str(os.getuid())


def _systemd_unit() -> str | None:
    """The unit this process runs in, from its cgroup (``.../abaco-export-dpd.service``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        for part in reversed(line.rsplit(":", 1)[-1].split("/")):
            if part.endswith((".service", ".scope")) and not part.startswith("session-"):
                return part
    return None


def _ancestor_names(limit: int = 8) -> list[str]:
    """Command names of the parent, grandparent, ... (Linux /proc; empty elsewhere)."""
    names: list[str] = []
    pid = os.getppid()
    for _ in range(limit):
        if pid <= 1:
            break
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        except OSError:
            break
        # pid (comm) state ppid ...; comm may itself contain spaces or parentheses
        names.append(stat[stat.index("(") + 1 : stat.rindex(")")])
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return names


def _interactive() -> bool:
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                return True
        except (AttributeError, ValueError, OSError):
            continue
    return False


def started_by() -> tuple[str, str | None]:
    """("systemd", unit) | ("cron", None) | ("terminal", None) | ("other", None)."""
    if os.environ.get("INVOCATION_ID"):  # set by systemd for every unit it starts
        return "systemd", _systemd_unit()
    if _CRON_NAMES.intersection(_ancestor_names()):
        return "cron", None
    if _interactive():
        return "terminal", None
    return "other", None


def host_id() -> str:
    """This host in the audit trail: ``<hostname>/<machine id, first 12 hex digits>``.

    The machine id (/etc/machine-id, set once per installation and readable only as root to
    change) keeps two VMs with the same hostname apart; without one, the hostname alone.
    """
    name = socket.gethostname()
    for path in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        try:
            machine = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if len(machine) >= 12 and all(c in "0123456789abcdef" for c in machine):
            return f"{name}/{machine[:12]}"
    return name


def current_actor() -> dict[str, Any]:
    """The actor block of an audit record."""
    via, unit = started_by()
    return {
        "user": _user(),
        "uid": os.getuid(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_by": via,
        "systemd_unit": unit,
    }
