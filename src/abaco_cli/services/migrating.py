"""`abaco migrate-tree`: bring an older runtime tree to this version now.

Two steps, both under each dataset's lock and crash-safe (journals of kind ``migrate``): CSV and
JSON files move out of the Parquet folders into folders of their own (runtime/migration.py),
and files of an earlier version are rewritten with this version's column types
(services/retyping.py). Every command that takes a dataset's lock does both for that dataset on
its own (Run.recover); this does it for every dataset at once, audited, or lists with
``dry_run`` what would change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from abaco_cli.runtime import migration
from abaco_cli.runtime.inventory import dataset_dirs, exported_runs
from abaco_cli.runtime.migration import Migration
from abaco_cli.services import retyping
from abaco_cli.services.retyping import Retyped
from abaco_cli.services.run import Run


@dataclass
class MigrateResult:
    moved: list[Migration] = field(default_factory=list)
    retyped: list[Retyped] = field(default_factory=list)


def migrate_tree(run: Run, *, dry_run: bool = False) -> MigrateResult:
    """Every run of every dataset brought to this version (or, ``dry_run``, to be)."""
    names = [folder.name for folder in dataset_dirs(run.tree)]
    if dry_run:
        result = MigrateResult()
        for name in names:
            for exported in exported_runs(run.tree, name):
                planned = migration.plan(run.tree, exported)
                if planned is not None:
                    result.moved.append(planned[1])
                retype = retyping.plan(exported)
                if retype is not None:
                    result.retyped.append(retype)
        return result
    with run.audited(arguments={"dry_run": False}, datasets=names, reads_source=False):
        run.hold(names)  # each lock brings its dataset to this version before anything else
    return MigrateResult(run.migrated, run.retyped)
