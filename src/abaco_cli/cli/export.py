"""`abaco export DATASET|all`: write datasets for an as-of date, or a backfill of month-ends."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, parse_as_of, state
from abaco_cli.cli.params import complete_each, metavar
from abaco_cli.cli.report import payload as report_payload
from abaco_cli.cli.report import render as report_render
from abaco_cli.datasets import REGISTRY
from abaco_cli.datasets.states import month_ends_between
from abaco_cli.dates import check_as_of, parse_date
from abaco_cli.errors import ExitCode, UploadPendingError, UsageError
from abaco_cli.runtime.tree import REPORTS_DATASET
from abaco_cli.services.exporting import (
    ExportEvent,
    ExportPlan,
    ExportResult,
    export_datasets,
    plan_export,
)
from abaco_cli.services.reporting import write_report
from abaco_cli.services.run import Run
from abaco_cli.services.upload_state import destination_key
from abaco_cli.services.uploading import summary as upload_summary
from abaco_cli.services.uploading import upload
from abaco_cli.settings import Settings
from abaco_cli.writers.registry import WRITERS, parse_formats

app = typer.Typer(
    help="Export datasets into the runtime tree (CSV, Parquet, JSON).", no_args_is_help=True
)
log = logging.getLogger("abaco.export")

MAX_SERIES_MONTHS = 120

AsOf = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="End-of-day date the figures describe (YYYY-MM-DD), at most yesterday in "
        "business_timezone. Default: yesterday.",
        show_default=False,
    ),
]
From = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Backfill: export every month-end from this date (YYYY-MM-DD) ... ",
        show_default=False,
    ),
]
To = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="... through this date, inclusive; each month-end is its own as-of date.",
        show_default=False,
    ),
]


def format_option(help_text: str) -> Any:
    """--format/-f: comma-separated formats, each completed."""
    return typer.Option(
        "--format",
        "-f",
        help=help_text,
        show_default=False,
        metavar=metavar("format"),
        autocompletion=complete_each(tuple(WRITERS)),
    )


Formats = Annotated[
    str | None, format_option("Comma-separated formats: csv, parquet, json. Default: csv,parquet.")
]
Months = Annotated[
    int | None,
    typer.Option(
        "--months",
        help="kpi: the series over the trailing N month-ends (kpi/series and the dashboard "
        "JSON); 0 for none. Default: kpi.series_months (12); 0 for a backfill (--from/--to).",
        show_default=False,
    ),
]
AllowFuture = Annotated[
    bool,
    typer.Option(
        "--allow-future",
        help="Accept an as-of date later than yesterday (its figures describe a day that is "
        "not over; it becomes the dataset's newest run).",
    ),
]
ReplaceFormats = Annotated[
    bool,
    typer.Option(
        "--replace-formats",
        help="Remove the date's files of formats this run does not write (default: they stay, "
        "and the new manifest lists them with the run and snapshot they came from).",
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (queries, target files); write nothing.")
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON object describing the run on stdout.")
]
Dest = Annotated[
    str | None,
    typer.Option(
        "--dest",
        help="Then upload the runs published to this destination: gs://bucket/prefix, "
        "s3://bucket/prefix, file:///path or a folder. Default: upload.destination "
        "(ABACO_UPLOAD__DESTINATION); unset: no upload. An upload that does not finish leaves "
        "the run published and pending (exit 5); `abaco upload` finishes it.",
        show_default=False,
    ),
]


def as_of_dates(
    settings: Settings,
    as_of: str | None,
    start: str | None,
    end: str | None,
    *,
    allow_future: bool = False,
) -> list[date]:
    """The as-of dates of a run: --as-of (default yesterday), or every month-end in
    [--from, --to]; none later than yesterday unless ``allow_future``."""
    if start is None and end is None:
        return [parse_as_of(as_of, settings, allow_future=allow_future)]
    if as_of is not None:
        raise UsageError("give either --as-of or --from/--to, not both")
    if start is None or end is None:
        raise UsageError("--from and --to go together: give both ends of the backfill")
    first = check_as_of(parse_date(start, "--from"), "--from", settings, allow_future=allow_future)
    last = check_as_of(parse_date(end, "--to"), "--to", settings, allow_future=allow_future)
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    dates = month_ends_between(first, last)
    if not dates:
        raise UsageError(
            f"no month-end between --from {first} and --to {last}; "
            "a backfill exports every month-end in the range"
        )
    return dates


def with_series_months(settings: Settings, months: int | None) -> Settings:
    """The settings with --months applied to kpi.series_months."""
    if months is None:
        return settings
    if not 0 <= months <= MAX_SERIES_MONTHS:
        raise UsageError(f"--months must be between 0 and {MAX_SERIES_MONTHS}, not {months}")
    return settings.model_copy(
        update={"kpi": settings.kpi.model_copy(update={"series_months": months})}
    )


def upload_payload(results: list[ExportResult]) -> dict[str, Any]:
    """The --json description of the upload, when the run had a destination."""
    outcome = next((r.upload for r in results if r.upload is not None), None)
    return {"upload": outcome.to_json()} if outcome is not None else {}


def result_payload(result: ExportResult, exports_root: str) -> dict[str, Any]:
    """The --json description of one dataset and as-of date."""
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


def run_payload(
    results: list[ExportResult], datasets: list[str], dates: list[date], exports_root: str
) -> dict[str, Any]:
    """The --json description of a run over several datasets or as-of dates."""
    return {
        "run_id": results[0].run_id if results else None,
        "status": "success",
        "datasets": datasets,
        "as_of_dates": [d.isoformat() for d in dates],
        "started_at": results[0].started_at if results else None,
        "finished_at": results[-1].finished_at if results else None,
        "files": sum(len(r.files) for r in results),
        "exports": [result_payload(r, exports_root) for r in results],
    }


class _ProgressRenderer:
    """Turns service events into rich progress bars on a terminal, log lines elsewhere."""

    def __init__(self, bar: Progress | None) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}
        self.dates: TaskID | None = None
        self.table: TaskID | None = None
        self.started: set[str] = set()

    def __call__(self, event: ExportEvent) -> None:
        if self.bar is None:
            if event.kind == "date" and event.total > 1 and event.message not in self.started:
                self.started.add(event.message)  # each date's start, not its end
                log.info("backfill %d/%d: %s", event.done + 1, event.total, event.message)
            elif event.kind not in ("rows", "date", "retry"):  # retries: logged where they happen
                log.info(event.message)
            return
        if event.kind == "date" and event.total > 1:
            if self.dates is None:
                self.dates = self.bar.add_task(event.message, total=event.total, detail="")
            self.bar.update(self.dates, completed=event.done, description=event.message)
        elif event.kind == "table" and self.dates is not None:
            # a backfill shows the dates' bar and the table being written, not every table
            if self.table is None:
                self.table = self.bar.add_task(event.message, total=None, detail="")
            self.bar.update(self.table, description=event.message, detail="")
        elif event.kind == "table":
            self.tasks[event.table] = self.bar.add_task(event.message, total=None, detail="")
        elif event.kind == "written" and event.table in self.tasks:
            # tables of one date run side by side: each spinner stops when its files are done
            task = self.tasks[event.table]
            self.bar.update(task, total=1, completed=1, detail=f"{event.rows:,} rows")
        elif event.kind == "published":
            self._finish_open()
            if self.table is not None:
                self.bar.update(self.table, total=1, completed=1)
        elif event.kind == "rows" and event.table in self.tasks:
            self.bar.update(self.tasks[event.table], detail=f"{event.rows:,} rows")
        elif event.kind == "waiting":
            self.bar.console.print(f"[yellow]{event.message}[/]")

    def _finish_open(self) -> None:
        """Stop every table's spinner (their rows stay on screen)."""
        assert self.bar is not None
        for task in self.tasks.values():
            self.bar.update(task, total=1, completed=1)


def _print_plan(
    settings: Settings,
    datasets: list[str],
    dates: list[date],
    formats: list[str],
    as_json: bool,
    replace_formats: bool,
) -> None:
    plans = [
        plan_export(settings, name, day, formats, replace_formats=replace_formats)
        for day in dates
        for name in datasets
    ]
    if as_json:
        payload = [
            {
                "dataset": plan.dataset,
                "as_of_date": plan.as_of.isoformat(),
                "dry_run": True,
                "manifest_path": str(plan.manifest_path),
                "files": [
                    {"table": f.table, "format": f.format, "path": str(f.path)} for f in plan.files
                ],
                "kept": [str(plan.exports / p) for p in plan.kept],
                "replaced": [str(plan.exports / p) for p in plan.replaced],
                "queries": plan.queries,
            }
            for plan in plans
        ]
        console.emit_json(payload[0] if len(payload) == 1 else payload)
        return
    for plan in plans[: len(datasets)]:  # the queries are the same for every date
        for table, query in plan.queries.items():
            console.stdout.print(f"-- {plan.dataset}/{table}", highlight=False)
            console.stdout.print(query.strip() + ";\n", highlight=False, markup=False)
    console.table(
        f"{', '.join(datasets)}: {len(dates)} as-of date(s) (dry run: nothing written)",
        ["dataset", "as_of_date", "table", "format", "target", "today"],
        [
            (p.dataset, p.as_of, f.table, f.format, f.path, _fate(p, f.path))
            for p in plans
            for f in p.files
        ]
        + [(p.dataset, p.as_of, "manifest", "json", p.manifest_path, "") for p in plans]
        + [
            (p.dataset, p.as_of, "", "", p.exports / kept, "stays (another format)")
            for p in plans
            for kept in p.kept
        ]
        + [
            (p.dataset, p.as_of, "", "", p.exports / gone, "removed (--replace-formats)")
            for p in plans
            for gone in p.replaced
            if str(p.exports / gone) not in {str(f.path) for f in p.files}
        ],
    )


def _fate(plan: ExportPlan, target: Path) -> str:
    """What the run does to a target: writes it anew, or replaces the date's current file."""
    replaced = {str(plan.exports / p) for p in plan.replaced}
    return "replaces the current file" if str(target) in replaced else "new"


def run_export(
    ctx: typer.Context,
    datasets: list[str],
    *,
    as_of: str | None,
    start: str | None = None,
    end: str | None = None,
    formats: str | None = None,
    months: int | None = None,
    allow_future: bool = False,
    replace_formats: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    dest: str | None = None,
    report: bool = False,
) -> None:
    """Parse the options, export (or plan) every dataset for every as-of date, upload them
    when there is a destination, write the report of each date when asked, render."""
    app_state = state(ctx)
    backfill = start is not None or end is not None
    if report and backfill and not months:
        raise UsageError(
            "--report with --from/--to needs the trend of each month-end: add --months N "
            "(e.g. --months 12)"
        )
    no_trend = backfill and months is None and "kpi" in datasets
    # each month-end of a backfill is one point of the trend: no series of its own
    settings = with_series_months(app_state.settings(), 0 if no_trend else months)
    dates = as_of_dates(settings, as_of, start, end, allow_future=allow_future)
    if no_trend:
        console.info(
            "backfill: kpi/series is not exported for each month-end (--months N to have it)"
        )
    chosen = parse_formats(formats if formats is not None else settings.default_formats)
    target = dest if dest is not None else settings.upload.destination
    if dry_run:
        _print_plan(settings, datasets, dates, chosen, as_json, replace_formats)
        if target is not None and not as_json:
            console.info(f"then the runs would be uploaded to {destination_key(target)}")
        if report and not as_json:
            console.info("then the report of each as-of date would be written (abaco report)")
        return
    run = app_state.run(f"export {'all' if len(datasets) > 1 else datasets[0]}", settings)
    pending: UploadPendingError | None = None
    with console.progress_bar(len(dates) if len(dates) > 1 else None) as bar:
        try:
            results = export_datasets(
                run,
                datasets,
                dates,
                chosen,
                replace_formats=replace_formats,
                progress=_ProgressRenderer(bar),
                upload_to=target,
                upload_progress=console.info,
            )
        except UploadPendingError as exc:  # exported and published; the upload is pending
            results, pending = list(exc.results), exc
    if not as_json:  # what was exported shows first, whatever the report does
        _render_results(settings, results, datasets, dates, as_json)
    written = []
    for day in dates if report else []:
        written.append(write_report(app_state.run("report", settings), day))
        if not as_json:
            report_render(written[-1], as_json=False)
    if written and target is not None:
        pending = _upload_reports(app_state.run("upload", settings), target) or pending
    if as_json:
        extra = {"reports": [report_payload(r) for r in written]} if report else {}
        _render_results(settings, results, datasets, dates, as_json, extra)
    if pending is not None:
        console.error(pending)
        raise typer.Exit(int(ExitCode.UPLOAD_PENDING))


def _upload_reports(run: Run, target: str) -> UploadPendingError | None:
    """The reports just written go where the export went (exit 5 when that upload did not
    finish: the reports stay published and pending, `abaco upload` sends them)."""
    result = upload(run, destination=target, dataset=REPORTS_DATASET, progress=console.info)
    if not result.exit_code:
        return None
    return UploadPendingError(
        f"the report was written; its upload is pending: {upload_summary(result)}"
    )


def _render_results(
    settings: Settings,
    results: list[ExportResult],
    datasets: list[str],
    dates: list[date],
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    exports_root = str(settings.exports_dir)
    if as_json:
        if len(datasets) == 1 and len(dates) == 1:
            payload = result_payload(results[0], exports_root)
        else:
            payload = run_payload(results, datasets, dates, exports_root)
        console.emit_json(payload | upload_payload(results) | (extra or {}))
        return
    title = (
        f"{results[0].dataset} as of {dates[0]}: run {results[0].run_id}"
        if len(results) == 1
        else f"{', '.join(datasets)}, {len(dates)} as-of date(s): run {results[0].run_id}"
    )
    console.table(
        title,
        ["file", "format", "rows", "size", "sha256"],
        [
            (
                f"{exports_root}/{f.path}",
                f.format,
                f"{f.rows:,}",
                human_bytes(f.bytes),
                f.sha256[:12],
            )
            for result in results
            for f in result.files
        ],
    )
    for result in results:
        console.info(f"manifest: {result.manifest_path}")
    print_upload(results)


def print_upload(results: list[ExportResult]) -> None:
    """One line on what the upload of the run sent (nothing when it had no destination or the
    upload is pending: the error says that)."""
    outcome = next((r.upload for r in results if r.upload is not None), None)
    if outcome is not None and not outcome.pending:
        sent = sum(r.files for r in outcome.runs)
        there = sum(r.skipped for r in outcome.runs)
        console.info(
            f"uploaded to {outcome.destination}: {sent} file(s) sent, {there} already there"
        )


def _register(name: str, help_text: str) -> None:
    if name == "kpi":

        @app.command(name, help=help_text)
        def kpi_command(
            ctx: typer.Context,
            as_of: AsOf = None,
            start: From = None,
            end: To = None,
            formats: Formats = None,
            months: Months = None,
            allow_future: AllowFuture = False,
            replace_formats: ReplaceFormats = False,
            dry_run: DryRun = False,
            as_json: AsJson = False,
            dest: Dest = None,
        ) -> None:
            run_export(
                ctx,
                [name],
                as_of=as_of,
                start=start,
                end=end,
                formats=formats,
                months=months,
                allow_future=allow_future,
                replace_formats=replace_formats,
                dry_run=dry_run,
                as_json=as_json,
                dest=dest,
            )

        return

    @app.command(name, help=help_text)
    def command(
        ctx: typer.Context,
        as_of: AsOf = None,
        start: From = None,
        end: To = None,
        formats: Formats = None,
        allow_future: AllowFuture = False,
        replace_formats: ReplaceFormats = False,
        dry_run: DryRun = False,
        as_json: AsJson = False,
        dest: Dest = None,
    ) -> None:
        run_export(
            ctx,
            [name],
            as_of=as_of,
            start=start,
            end=end,
            formats=formats,
            allow_future=allow_future,
            replace_formats=replace_formats,
            dry_run=dry_run,
            as_json=as_json,
            dest=dest,
        )


for _name, _spec in REGISTRY.items():
    _register(_name, f"{_spec.description} ({_spec.refresh}).")


@app.command(
    "all",
    help="Every dataset (dpd, kpi, pricing, analytics) in one run: per as-of date one "
    "snapshot of the source and one manifest per dataset; nothing of a date is published "
    "unless every dataset of it succeeded.",
)
def export_all(
    ctx: typer.Context,
    as_of: AsOf = None,
    start: From = None,
    end: To = None,
    formats: Formats = None,
    months: Months = None,
    allow_future: AllowFuture = False,
    replace_formats: ReplaceFormats = False,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    dest: Dest = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Then write the report of each as-of date (abaco report: HTML and charts in "
            "exports/reports/, from the files just exported).",
        ),
    ] = False,
) -> None:
    run_export(
        ctx,
        list(REGISTRY),
        as_of=as_of,
        start=start,
        end=end,
        formats=formats,
        months=months,
        allow_future=allow_future,
        replace_formats=replace_formats,
        dry_run=dry_run,
        as_json=as_json,
        dest=dest,
        report=report,
    )
