"""`abaco prune --retention 90d`: remove whole exported runs older than a retention."""

from __future__ import annotations

from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, state
from abaco_cli.errors import ExitCode, LockedError
from abaco_cli.services.pruning import parse_retention, prune


def prune_command(
    ctx: typer.Context,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            help="Remove runs that finished longer ago than this: Nh, Nd or Nw (e.g. 90d). "
            "Default: prune.datasets.<name>, else prune.retention from the configuration.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go, why and how big; delete nothing.")
    ] = False,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset.", show_default=False)
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last",
            help="Always keep this many newest successful runs per dataset (at least 1; "
            "default: prune.keep_last, 1).",
            show_default=False,
        ),
    ] = None,
    include_not_uploaded: Annotated[
        bool,
        typer.Option(
            "--include-not-uploaded",
            help="With a destination configured (upload.destination), also remove runs not "
            "uploaded there yet (by default they are kept: they may exist nowhere else).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Remove whole runs (files and manifest) older than the retention; never the newest."""
    window = parse_retention(retention) if retention is not None else None
    result = prune(
        state(ctx).run("prune"),
        retention=window,
        dataset=dataset,
        keep_last=keep_last,
        dry_run=dry_run,
        on_wait=lambda holder: console.info(f"waiting for {holder}"),
        include_not_uploaded=include_not_uploaded,
    )
    if as_json:
        console.emit_json(result.to_json())
    else:
        verb = "would remove" if dry_run else "removed"
        if result.removed:
            console.table(
                f"runs {verb}",
                ["dataset", "as_of", "run_id", "files", "size", "reason"],
                [
                    (
                        r.dataset,
                        r.as_of_date,
                        r.run_id,
                        len(r.files),
                        human_bytes(r.bytes),
                        r.reason,
                    )
                    for r in result.removed
                ],
            )
        if result.unknown:
            console.table(
                "unknown files (no manifest names them; left in place)",
                ["path", "size", "why"],
                [(u.path, human_bytes(u.bytes), u.reason) for u in result.unknown],
            )
        freed = "would free" if dry_run else "freed"
        console.info(
            f"{verb} {result.count} run(s), {freed} {human_bytes(result.bytes)}; "
            f"kept {len(result.kept)}; {len(result.unknown)} unknown file(s)"
        )
    for message in result.locked:
        console.error(LockedError(message, hint="The next prune takes care of this dataset."))
    if result.locked:
        raise typer.Exit(int(ExitCode.LOCKED))
