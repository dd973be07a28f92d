"""`abaco export DATASET`: write a dataset for an as-of date into the runtime tree."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from abaco_cli.cli import console
from abaco_cli.cli.common import handle_errors, human_bytes, parse_as_of, state
from abaco_cli.datasets import REGISTRY
from abaco_cli.services.exporting import ExportEvent, ExportResult, export_dataset, plan_export
from abaco_cli.writers.registry import parse_formats

app = typer.Typer(
    help="Export datasets into the runtime tree (CSV, Parquet, JSON).", no_args_is_help=True
)
log = logging.getLogger("abaco.export")

AsOf = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="End-of-day date the figures describe (YYYY-MM-DD). Default: yesterday (UTC).",
        show_default=False,
    ),
]
Formats = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="Comma-separated formats: csv, parquet, json. Default: csv,parquet.",
        show_default=False,
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (queries, target files); write nothing.")
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON object describing the run on stdout.")
]


def result_payload(result: ExportResult, exports_root: str) -> dict[str, Any]:
    """The --json description of a run."""
    return {
        "run_id": result.run_id,
        "dataset": result.dataset,
        "as_of_date": result.as_of.isoformat(),
        "status": result.status,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "manifest_path": str(result.manifest_path),
        "files": [
            {
                "path": f"{exports_root}/{f.path}",
                "table": f.table,
                "format": f.format,
                "rows": f.rows,
                "bytes": f.bytes,
                "sha256": f.sha256,
            }
            for f in result.files
        ],
    }


class _ProgressRenderer:
    """Turns service events into a rich progress bar on a terminal, log lines elsewhere."""

    def __init__(self, bar: Progress | None) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: ExportEvent) -> None:
        if self.bar is None:
            if event.kind == "date" and event.total > 1 and event.done < event.total:
                log.info("backfill %d/%d: %s", event.done + 1, event.total, event.message)
            elif event.kind not in ("rows", "date"):
                log.info(event.message)
            return
        if event.kind == "table":
            self.tasks[event.table] = self.bar.add_task(event.message, total=None, detail="")
        elif event.kind == "rows" and event.table in self.tasks:
            self.bar.update(self.tasks[event.table], detail=f"{event.rows:,} rows")
        elif event.kind in ("waiting", "retry"):
            self.bar.console.print(f"[yellow]{event.message}[/]")


def run_export(
    ctx: typer.Context,
    dataset: str,
    as_of: str | None,
    formats: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    app_state = state(ctx)
    settings = app_state.settings()
    day = parse_as_of(as_of)
    chosen = parse_formats(formats if formats is not None else settings.default_formats)
    if dry_run:
        plan = plan_export(settings, dataset, day, chosen)
        if as_json:
            console.emit_json(
                {
                    "dataset": plan.dataset,
                    "as_of_date": day.isoformat(),
                    "dry_run": True,
                    "manifest_path": str(plan.manifest_path),
                    "files": [
                        {"table": f.table, "format": f.format, "path": str(f.path)}
                        for f in plan.files
                    ],
                    "queries": plan.queries,
                }
            )
            return
        for table, query in plan.queries.items():
            console.stdout.print(f"-- {plan.dataset}/{table}", highlight=False)
            console.stdout.print(query.strip() + ";\n", highlight=False, markup=False)
        console.table(
            f"{plan.dataset} as of {day} (dry run: nothing written)",
            ["table", "format", "target"],
            [(f.table, f.format, f.path) for f in plan.files]
            + [("manifest", "json", plan.manifest_path)],
        )
        return
    with console.progress_bar() as bar:
        result = export_dataset(
            settings,
            dataset,
            day,
            chosen,
            command=f"export {dataset}",
            progress=_ProgressRenderer(bar),
        )
    exports_root = str(settings.exports_dir)
    if as_json:
        console.emit_json(result_payload(result, exports_root))
        return
    console.table(
        f"{result.dataset} as of {day}: run {result.run_id}",
        ["file", "format", "rows", "size", "sha256"],
        [
            (
                f"{exports_root}/{f.path}",
                f.format,
                f"{f.rows:,}",
                human_bytes(f.bytes),
                f.sha256[:12],
            )
            for f in result.files
        ],
    )
    console.info(f"manifest: {result.manifest_path}")


def _register(name: str, help_text: str) -> None:
    @app.command(name, help=help_text)
    @handle_errors
    def command(
        ctx: typer.Context,
        as_of: AsOf = None,
        formats: Formats = None,
        dry_run: DryRun = False,
        as_json: AsJson = False,
    ) -> None:
        run_export(ctx, name, as_of, formats, dry_run, as_json)


for _name, _spec in REGISTRY.items():
    _register(_name, f"{_spec.description} ({_spec.refresh}).")
