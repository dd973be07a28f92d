"""`abaco migrate-tree`: move an older runtime tree to one format a folder."""

from __future__ import annotations

from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.services.migrating import migrate_tree


def migrate_tree_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would move; move nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Move CSV and JSON files out of the Parquet table folders into <table>.csv/ and
    <table>.json/, rewriting their manifests (every export and prune of a dataset does this for
    that dataset on its own; this does it for all, now)."""
    migrations = migrate_tree(state(ctx).run("migrate-tree"), dry_run=dry_run)
    if as_json:
        console.emit_json({"dry_run": dry_run, "runs": [m.to_json() for m in migrations]})
        return
    verb = "would move" if dry_run else "moved"
    rows = [
        (m.dataset, m.as_of_date, move.source, move.target) for m in migrations for move in m.moves
    ]
    if rows:
        console.table(f"files {verb}", ["dataset", "as_of", "from", "to"], rows)
    console.info(
        f"{verb} {len(rows)} file(s) of {len(migrations)} run(s) to folders of their own"
        + ("" if rows else ": the tree already has one format a folder")
    )
