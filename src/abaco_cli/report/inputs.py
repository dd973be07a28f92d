"""The report's inputs: the exported tables of one as-of date, read through their manifests.

Nothing here touches the database: a table is read from the Parquet file that the date's
manifest of its dataset names (exact decimals), after checking that it is still the file the
manifest describes (size and sha256). A dataset or table that is missing is a NotFoundError
(exit 1) naming the export command that writes it, so the report also runs on a laptop from a
copied tree or a bucket download.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from abaco_cli.errors import NotFoundError
from abaco_cli.runtime import files
from abaco_cli.runtime.inventory import read_pointer, read_run
from abaco_cli.runtime.manifest import Manifest, ManifestFile
from abaco_cli.runtime.tree import Place, RuntimeTree

Row = dict[str, Any]

# What the report reads: dataset -> its tables (summary tables; pricing/adherence is one row a
# loan of the pricing window, read as columns and summed in Arrow).
NEEDED: dict[str, tuple[str, ...]] = {
    "kpi": ("snapshot", "series"),
    "dpd": ("aging",),
    "analytics": ("vintages", "roll_rates", "concentration", "customer_types"),
    "pricing": ("grid", "adherence"),
}
# Only these columns of a table are read (the others of a one-row-a-loan table are not needed).
COLUMNS: dict[str, tuple[str, ...]] = {
    "pricing/adherence": ("risk_band", "band_matched", "is_adherent"),
}
READ_FORMATS = ("parquet",)  # exact decimals and types; CSV would be parsed as floats


def export_command(dataset: str, as_of: date) -> str:
    return f"abaco export {dataset} --as-of {as_of.isoformat()}"


@dataclass
class ReportInputs:
    """The tables of one date (as rows), and the manifests they came from."""

    as_of: date
    manifests: dict[str, Manifest] = field(default_factory=dict)
    tables: dict[str, list[Row]] = field(default_factory=dict)  # "kpi/snapshot" -> rows

    def rows(self, dataset: str, table: str) -> list[Row]:
        return self.tables[f"{dataset}/{table}"]

    @property
    def run_ids(self) -> dict[str, str]:
        return {name: m.run_id for name, m in sorted(self.manifests.items())}

    @property
    def snapshot_at(self) -> datetime | None:
        """The source instant of the kpi run (every dataset of an `export all` shares it)."""
        kpi = self.manifests.get("kpi")
        return kpi.snapshot_at if kpi is not None else None

    @property
    def source(self) -> dict[str, str]:
        kpi = self.manifests.get("kpi")
        return dict(kpi.source) if kpi is not None else {}


def newest_date(tree: RuntimeTree) -> date:
    """The as-of date of the newest kpi run (kpi/latest.json): the report's default date."""
    pointer = read_pointer(tree, "kpi")
    if pointer is None or pointer.as_of is None:
        raise NotFoundError(
            f"no kpi export in {tree.exports}: the report reads the exported datasets",
            hint="Run `abaco export all --as-of YYYY-MM-DD` first, or give --as-of.",
        )
    return pointer.as_of


def _manifest(tree: RuntimeTree, dataset: str, as_of: date) -> Manifest:
    path = tree.manifest_path(dataset, as_of)
    command = export_command(dataset, as_of)
    if not files.exists(path):
        raise NotFoundError(
            f"{dataset} as of {as_of} has not been exported (no {tree.relative(path)}): "
            f"run `{command}`",
            hint=f"The report reads exported files only: `abaco export all --as-of "
            f"{as_of.isoformat()}` writes every dataset it needs.",
        )
    run = read_run(tree, dataset, path, marked=False)
    if run.manifest is None or not run.manifest.successful:
        problem = run.problem.message if run.problem is not None else "not a successful run"
        raise NotFoundError(
            f"the manifest of {dataset} as of {as_of} cannot be used ({problem}): "
            f"run `{command}` again",
        )
    return run.manifest


def _entry(manifest: Manifest, table: str) -> ManifestFile | None:
    by_format = {f.format: f for f in manifest.files if f.table == table}
    return next((by_format[f] for f in READ_FORMATS if f in by_format), None)


def read_table(tree: RuntimeTree, manifest: Manifest, table: str) -> list[Row]:
    """One table of a run as rows (exact decimals), from the file its manifest names."""
    entry = _entry(manifest, table)
    command = export_command(manifest.dataset, manifest.as_of_date)
    if entry is None:
        raise NotFoundError(
            f"{manifest.dataset}/{table} as of {manifest.as_of_date} has no Parquet "
            f"file: run `{command} --format parquet`",
        )
    path = tree.data_file(entry.path, manifest.dataset, manifest.as_of_date)
    try:
        with files.open_read(tree, path, Place.DATA) as handle:
            content = handle.read()
    except OSError as exc:
        raise NotFoundError(
            f"{entry.path} cannot be read ({exc.strerror or exc}): run `{command}` again"
        ) from None
    if len(content) != entry.bytes or hashlib.sha256(content).hexdigest() != entry.sha256:
        raise NotFoundError(
            f"{entry.path} is not the file its manifest describes (size or sha256 differ): "
            f"run `{command}` again (`abaco audit verify` lists what else changed)",
        )
    columns = COLUMNS.get(f"{manifest.dataset}/{table}")
    data: pa.Table = pq.read_table(io.BytesIO(content), columns=list(columns) if columns else None)
    rows: list[Row] = data.to_pylist()
    return rows


def load_inputs(
    tree: RuntimeTree, as_of: date, needed: dict[str, tuple[str, ...]] | None = None
) -> ReportInputs:
    """Every table the report needs as of ``as_of``; NotFoundError naming the export command
    for the first dataset (in the order kpi, dpd, analytics, pricing) that is missing."""
    inputs = ReportInputs(as_of)
    wanted = needed if needed is not None else NEEDED
    for dataset in wanted:
        inputs.manifests[dataset] = _manifest(tree, dataset, as_of)
    for dataset, tables in wanted.items():
        for table in tables:
            inputs.tables[f"{dataset}/{table}"] = read_table(tree, inputs.manifests[dataset], table)
    return inputs
