"""`abaco migrate-tree`: bring an older runtime tree to this version."""

from __future__ import annotations

from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.services.migrating import migrate_tree

MIGRATE_HELP = (
    "Move CSV and JSON files out of the Parquet table folders into <table>.csv/ and "
    "<table>.json/, and rewrite files of an earlier version with this version's column types "
    "(ratios as decimal(18,10)), their manifests with them. Every export and prune of a "
    "dataset does this for that dataset on its own; this does it for all, now."
)


def migrate_tree_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would change; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Move a tree to this version's layout and types (the help text is MIGRATE_HELP)."""
    result = migrate_tree(state(ctx).run("migrate-tree"), dry_run=dry_run)
    if as_json:
        console.emit_json(
            {
                "dry_run": dry_run,
                "runs": [m.to_json() for m in result.moved],
                "retyped": [r.to_json() for r in result.retyped],
            }
        )
        return
    verb = "would move" if dry_run else "moved"
    rows = [
        (m.dataset, m.as_of_date, move.source, move.target)
        for m in result.moved
        for move in m.moves
    ]
    if rows:
        console.table(f"files {verb}", ["dataset", "as_of", "from", "to"], rows)
    retyped = [(r.dataset, r.as_of_date, path, ", ".join(r.columns))
               for r in result.retyped for path in r.files]  # fmt: skip
    rewrite = "would rewrite" if dry_run else "rewrote"
    if retyped:
        console.table(f"files {rewrite} with this version's types",
                      ["dataset", "as_of", "file", "columns"], retyped)  # fmt: skip
    console.info(
        f"{verb} {len(rows)} file(s) to folders of their own; {rewrite} {len(retyped)} "
        "file(s) with this version's column types"
        + ("" if rows or retyped else ": the tree is up to date")
    )
