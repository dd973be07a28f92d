"""`abaco report`: the HTML report of a date's exported datasets, published as the dataset
``reports`` like every export.

The run reads the date's kpi, dpd, analytics and pricing files through their manifests
(report/inputs.py: never the database), renders the page and the charts (report/render.py)
into temporary files beside their targets in ``exports/reports/``, and publishes them with the
date's journal (services/exporting.py ``publish_date``) under the lock of ``reports``: one
manifest a date (``reports/_manifests/reports_<D>.manifest.json``), latest.json, and the alias
``report_latest.html`` (a copy of the newest date's page, kept out of the manifests like
``kpi_latest.json``). The audit log gets START, then COMPLETE or FAIL; a missing dataset fails
the run with one line naming the export command to run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from abaco_cli import __version__, metrics
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.datasets.kpi.catalogue import catalogue
from abaco_cli.db.source import SourceIdentity
from abaco_cli.errors import WriteError
from abaco_cli.report.inputs import ReportInputs, load_inputs, newest_date
from abaco_cli.runtime.manifest import iso_time
from abaco_cli.runtime.tree import REPORT_ALIAS, REPORTS_DATASET
from abaco_cli.services.exporting import ExportResult, publish_date
from abaco_cli.services.run import Run, iso
from abaco_cli.services.staging import (
    DatasetRun,
    PlannedFile,
    StagedFile,
    discard,
    write_staged,
)
from abaco_cli.settings import Settings

__all__ = ["REPORTS", "ReportResult", "write_report"]
log = logging.getLogger("abaco.report")


def _no_params(settings: Settings, as_of: date) -> dict[str, object]:
    return {}


REPORTS = DatasetSpec(
    name=REPORTS_DATASET,
    description="The HTML report of a date's datasets, with its charts as PNG and SVG.",
    refresh="after the daily exports",
    tables=(),
    build_params=_no_params,
)


@dataclass
class ReportResult:
    """What a report run published, and where the reader opens it."""

    export: ExportResult
    html: Path
    alias: Path
    seconds: float
    input_runs: dict[str, str]


def _stage(run: Run, inputs: ReportInputs) -> list[StagedFile]:
    # the charts' libraries (Altair, vl-convert: about 0.4 s to import) only when a report is
    # written, not at every command's start
    from abaco_cli.report.page import Header
    from abaco_cli.report.render import definitions_version, render_report

    """Render the report into temporary files beside its targets (fsynced)."""
    tree = run.tree
    header = Header(
        as_of=inputs.as_of,
        generated_at=iso(run.started),
        run_id=run.run_id,
        input_runs=inputs.run_ids,
        source=inputs.source,
        snapshot_at=iso_time(inputs.snapshot_at) if inputs.snapshot_at else "unknown",
        definitions_version=definitions_version(inputs),
        tool_version=__version__,
    )
    rendered = render_report(inputs, header, catalogue(run.settings))
    staged: list[StagedFile] = []
    try:
        for item in rendered:
            target = tree.dataset_dir(REPORTS_DATASET) / item.name
            staged_file = StagedFile(
                REPORTS_DATASET,
                PlannedFile(item.table, item.format, target),
                tree.temp_path(target, run.run_id),
                rows=1,
            )
            staged.append(staged_file)
            write_staged(tree, staged_file, item.content)
    except BaseException as exc:
        discard(tree, staged)
        if isinstance(exc, OSError):
            raise WriteError(f"could not write the report: {exc}") from None
        raise
    return staged


def write_report(run: Run, as_of: date | None = None) -> ReportResult:
    """Build and publish the report of ``as_of`` (by default the newest kpi export's date)."""
    clock = time.monotonic()
    succeeded = False
    try:
        day = as_of if as_of is not None else newest_date(run.tree)
        with run.audited(
            arguments={"as_of": day.isoformat()},
            datasets=[REPORTS_DATASET],
            as_of_dates=[day.isoformat()],
            reads_source=False,
        ) as audit:
            run.hold([REPORTS_DATASET])
            inputs = load_inputs(run.tree, day)
            audit.details["inputs"] = inputs.run_ids
            if inputs.source:  # the report describes the source its inputs were read from
                run.source = SourceIdentity(
                    host=inputs.source.get("host", ""),
                    port=inputs.source.get("port", ""),
                    database=inputs.source.get("database", ""),
                    user=inputs.source.get("user", ""),
                )
            staged = _stage(run, inputs)
            results = publish_date(
                run, [DatasetRun(REPORTS, staged, inputs.snapshot_at)], day, replace_formats=True
            )
        succeeded = True
    finally:
        update = metrics.MetricsUpdate()
        update.count(
            "abaco_runs_total", command="report", status="success" if succeeded else "failure"
        )
        run.metrics(update)
    seconds = time.monotonic() - clock
    log.debug("report took %.1f s", seconds)
    folder = run.tree.dataset_dir(REPORTS_DATASET)
    return ReportResult(
        export=results[0],
        html=folder / f"report_{day.isoformat()}.html",
        alias=folder / REPORT_ALIAS,
        seconds=seconds,
        input_runs=inputs.run_ids,
    )
