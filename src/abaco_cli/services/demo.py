"""`abaco demo`: a private PostgreSQL, a synthetic portfolio, every export, then clean up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from pydantic import SecretStr

from abaco_cli.datasets import REGISTRY
from abaco_cli.pgcluster import LocalCluster
from abaco_cli.services.database import init_database, seed_database
from abaco_cli.services.exporting import ExportResult, ProgressCallback, export_dataset
from abaco_cli.settings import Settings

DEMO_THROUGH = date(2025, 12, 31)


@dataclass
class DemoResult:
    dsn: str | None
    loans: int
    as_of: date
    exports: list[ExportResult] = field(default_factory=list)


def run_demo(
    settings: Settings,
    *,
    loans: int = 20_000,
    seed: int = 7,
    as_of: date = DEMO_THROUGH,
    keep: bool = False,
    step: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Start a throwaway cluster, seed it, export every dataset; stop it unless ``keep``."""

    def say(message: str) -> None:
        if step is not None:
            step(message)

    cluster = LocalCluster(keep=keep)
    say("starting a private PostgreSQL server")
    cluster.start()
    try:
        local = settings.model_copy(update={"database_url": SecretStr(cluster.dsn)})
        say("creating the source contract (abaco db init)")
        init_database(local)
        say(f"seeding {loans:,} synthetic loans (abaco db seed --loans {loans} --seed {seed})")
        seeded = seed_database(local, loans=loans, seed=seed, through=DEMO_THROUGH, replace=False)
        result = DemoResult(cluster.dsn if keep else None, seeded.loans, as_of)
        for name in REGISTRY:
            say(f"exporting {name} as of {as_of} (abaco export {name} --as-of {as_of})")
            result.exports.append(
                export_dataset(
                    local, name, as_of, local.default_formats, command="demo", progress=progress
                )
            )
        return result
    finally:
        cluster.stop()
