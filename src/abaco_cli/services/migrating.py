"""`abaco migrate-tree`: move an older runtime tree to the one-format-a-folder layout now.

Every command that takes a dataset's lock migrates that dataset on its own (Run.recover); this
command does it for every dataset at once, audited, or lists with ``dry_run`` what would move.
"""

from __future__ import annotations

from abaco_cli.runtime.inventory import dataset_dirs, exported_runs
from abaco_cli.runtime.migration import Migration, plan
from abaco_cli.services.run import Run


def migrate_tree(run: Run, *, dry_run: bool = False) -> list[Migration]:
    """Every run of every dataset moved to the new layout (or, ``dry_run``, to be moved)."""
    names = [folder.name for folder in dataset_dirs(run.tree)]
    if dry_run:
        return [
            planned[1]
            for name in names
            for exported in exported_runs(run.tree, name)
            if (planned := plan(run.tree, exported)) is not None
        ]
    with run.audited(arguments={"dry_run": False}, datasets=names, reads_source=False):
        run.hold(names)  # each lock migrates its dataset before anything else
    return run.migrated
