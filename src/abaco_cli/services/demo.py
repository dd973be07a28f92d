"""`abaco demo`: a private PostgreSQL, a synthetic portfolio, every export, then clean up.

Safe by default: the demo writes into a tree of its own (``./abaco_runtime``, or the folder
given on its command line), never the configured one, with its own audit log and metrics; it
refuses a tree whose manifests name a source other than a demo server; its server runs with a
minimal environment (pgcluster.py) and is removed afterwards unless asked to stay.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pydantic import SecretStr

from abaco_cli.datasets import REGISTRY
from abaco_cli.errors import UsageError
from abaco_cli.pgcluster import LocalCluster, find_server_bindir
from abaco_cli.runtime.inventory import dataset_dirs, exported_runs
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.database import init_database, seed_database
from abaco_cli.services.exporting import ExportResult, ProgressCallback, export_datasets
from abaco_cli.services.reporting import write_report
from abaco_cli.services.run import Run
from abaco_cli.settings import AuditSettings, MetricsSettings, Settings, UploadSettings
from abaco_cli.storage import open_destination, parse_destination

DEMO_THROUGH = date(2025, 12, 31)
DEMO_DATABASE = "abaco_demo"
DEMO_RUNTIME_DIR = Path("abaco_runtime")


@dataclass
class DemoResult:
    dsn: str | None
    loans: int
    as_of: date
    runtime_dir: Path
    exports: list[ExportResult] = field(default_factory=list)
    stop_command: str | None = None  # with keep: the shell command that stops and removes it
    destination: str | None = None  # --dest: the folder the runs were uploaded to
    remote: list[tuple[str, int]] = field(default_factory=list)  # what it holds: name, bytes
    report: Path | None = None  # the report of the exports (abaco report)


def stop_command(cluster: LocalCluster) -> str:
    """The shell line that stops a kept server (`pg_ctl stop`, as the user who runs it when
    that is not the caller: PostgreSQL refuses root) and removes its folder."""
    data, base = cluster.data_dir, cluster.base_dir
    pg_ctl = shlex.join(
        [str(find_server_bindir() / "pg_ctl"), "stop", "-m", "fast", "-D", str(data)]
    )
    owner = data.stat().st_uid
    if owner != os.geteuid():
        name = pwd.getpwuid(owner).pw_name
        switch = ["runuser", "-u", name, "--"] if shutil.which("runuser") else ["sudo", "-u", name]
        pg_ctl = f"{shlex.join(switch)} {pg_ctl}"
    return f"{pg_ctl} && rm -rf {shlex.quote(str(base))}"


def demo_settings(settings: Settings, runtime_dir: Path) -> Settings:
    """The demo's settings: the configured figures' policies, but its own tree, audit log and
    metrics (never production's), no upload destination (only its own --dest), and no
    database until its server is up."""
    return settings.model_copy(
        update={
            "runtime_dir": runtime_dir,
            "database_url": None,
            "audit": AuditSettings(),
            "metrics": MetricsSettings(),
            "upload": UploadSettings(),
        }
    )


def check_demo_destination(dest: str) -> str:
    """The demo uploads to a local folder only (no cloud account needed, none ever used);
    the folder's absolute path, or UsageError."""
    try:
        parsed = parse_destination(dest)
    except ValueError as exc:
        raise UsageError(f"--dest: {exc}") from None
    if parsed.scheme != "file":
        raise UsageError(
            f"--dest {parsed.display}: the demo uploads to a local folder only",
            hint="Give a folder, e.g. `abaco demo --dest ./abaco_landing`; a bucket is for "
            "`abaco export ... --dest` and `abaco upload`.",
        )
    return parsed.display


def is_demo_source(source: dict[str, str] | object) -> bool:
    """Does a manifest's source name a demo server (its database on a private socket)?"""
    if not isinstance(source, dict):
        return False
    host = str(source.get("host", ""))
    return source.get("database") == DEMO_DATABASE and host.startswith("/")


def check_demo_tree(runtime_dir: Path) -> None:
    """UsageError when the tree holds exports of a source other than a demo server, or a
    manifest that cannot be read (it may well be production's)."""
    tree = RuntimeTree.at(runtime_dir)
    hint = "Run the demo in another folder: `abaco demo --runtime-dir /tmp/abaco-demo`."
    for folder in dataset_dirs(tree):
        for run in exported_runs(tree, folder.name):
            where = tree.relative(run.manifest_path)
            if run.manifest is None:
                raise UsageError(
                    f"{tree.root} holds a manifest that cannot be read ({where}), so it may "
                    "hold exports of a real source: the demo never writes there",
                    hint=hint,
                )
            source = dict(run.manifest.source)
            if not is_demo_source(source):
                name = f"{source.get('host', '?')}/{source.get('database', '?')}"
                raise UsageError(
                    f"{tree.root} holds exports of {name}, not of a demo server ({where}): "
                    "the demo never writes over them",
                    hint=hint,
                )


def run_demo(
    settings: Settings,
    *,
    loans: int = 20_000,
    seed: int = 7,
    as_of: date = DEMO_THROUGH,
    keep: bool = False,
    step: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
    dest: str | None = None,
) -> DemoResult:
    """Start a throwaway cluster, seed it, export every dataset into ``settings.runtime_dir``
    (the demo's own, see demo_settings), upload the runs to the folder ``dest`` when given,
    write the report of the exports (read from the files, not the server);
    stop the cluster unless ``keep`` (and always when the demo fails)."""

    def say(message: str) -> None:
        if step is not None:
            step(message)

    check_demo_tree(settings.runtime_dir)
    folder = check_demo_destination(dest) if dest is not None else None
    cluster = LocalCluster(database=DEMO_DATABASE, keep=keep)
    say("starting a private PostgreSQL server")
    cluster.start()
    try:
        local = settings.model_copy(update={"database_url": SecretStr(cluster.dsn)})
        say("creating the source contract (abaco db init)")
        init_database(Run(local, "demo: db init"))
        say(f"seeding {loans:,} synthetic loans (abaco db seed --loans {loans} --seed {seed})")
        seeded = seed_database(
            Run(local, "demo: db seed"), loans=loans, seed=seed, through=DEMO_THROUGH, replace=False
        )
        result = DemoResult(
            cluster.dsn if keep else None,
            seeded.loans,
            as_of,
            RuntimeTree.at(local.runtime_dir).root,
            stop_command=stop_command(cluster) if keep else None,
        )
        say(f"exporting every dataset as of {as_of} (abaco export all --as-of {as_of})")
        result.exports = export_datasets(
            Run(local, "demo: export all"),
            list(REGISTRY),
            [as_of],
            local.default_formats,
            progress=progress,
            upload_to=folder,
            upload_progress=step,
        )
        if folder is not None:
            result.destination = folder
            result.remote = remote_listing(local, folder)
        say(f"writing the report of the exports (abaco report --as-of {as_of})")
        result.report = write_report(Run(local, "demo: report"), as_of).html
    except BaseException:
        cluster.destroy()  # a failed demo never leaves a server behind, --keep or not
        raise
    cluster.stop()  # with keep: the server stays up and the caller prints its DSN
    return result


def remote_listing(settings: Settings, folder: str) -> list[tuple[str, int]]:
    """Every object of a folder destination (name and size): the remote layout."""
    target = open_destination(folder, settings)
    try:
        return [(info.name, info.size) for info in target.list()]
    finally:
        target.close()
