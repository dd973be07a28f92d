"""Earlier partitions rewritten with this version's column types.

Version 2 of every dataset gives every ratio and rate one exact type, decimal128(18, 10), where
version 1 wrote binary floats (``double``) and rates of scale 6 (``decimal128(10, 6)``). A
Hive-partitioned table must not hold two types for one column (BigQuery's external tables
fail on it), so, under a dataset's lock, every file of a live manifest that still has such a
column is rewritten: read back, the column cast (a float to the nearest decimal of 10 places,
a rate exactly), written by the same writer under a temporary name, then published with a
journal of kind ``migrate`` that also rewrites the manifest (same run id, new sizes, checksums
and column types). Money, counts, dates and text are read and written unchanged.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from abaco_cli import __version__
from abaco_cli.runtime import files, journal
from abaco_cli.runtime.inventory import ExportedRun, exported_runs
from abaco_cli.runtime.journal import MIGRATE, Checkpoint, DatasetPart, Move, PublishRecord
from abaco_cli.runtime.manifest import Column, ManifestFile, iso_time
from abaco_cli.runtime.tree import TABLES_DATASET, Place, RuntimeTree
from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.registry import WRITERS

RATIO = pa.decimal128(18, 10)
_DECIMAL = re.compile(r"^decimal128\((\d+), (\d+)\)$")
_SIMPLE: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "double": pa.float64(),
    "float": pa.float32(),
    "date32[day]": pa.date32(),
}


def new_type(type_text: str) -> pa.DataType | None:
    """The type a column of an earlier version becomes, or None when it keeps its own."""
    if type_text in ("double", "float"):
        return RATIO
    match = _DECIMAL.match(type_text)
    if match and int(match.group(2)) not in (2, 10):
        return RATIO  # a rate of version 1: decimal128(10, 6), decimal128(12, 6)
    return None


def _arrow_type(type_text: str) -> pa.DataType:
    """A column type as a manifest writes it, back to Arrow (timestamps as their CSV text)."""
    match = _DECIMAL.match(type_text)
    if match:
        return pa.decimal128(int(match.group(1)), int(match.group(2)))
    if type_text.startswith("timestamp"):
        return pa.string()
    return _SIMPLE.get(type_text, pa.string())


@dataclass(frozen=True)
class Retyped:
    """One run whose files were (or, in a dry run, would be) rewritten."""

    dataset: str
    as_of_date: str
    run_id: str
    files: tuple[str, ...]
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "as_of_date": self.as_of_date,
            "run_id": self.run_id,
            "files": list(self.files),
            "columns": list(self.columns),
        }


def _cast(table: pa.Table) -> pa.Table:
    """Every ratio and rate column cast to decimal128(18, 10); floats through their shortest
    decimal text, so 0.1 stays 0.1."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        target = new_type(str(field.type))
        if target is None:
            columns.append(column)
        elif pa.types.is_floating(field.type):
            values = [
                None if v is None else Decimal(repr(v)).quantize(Decimal("1E-10"))
                for v in column.to_pylist()
            ]
            columns.append(pa.array(values, target))
        else:
            columns.append(column.cast(target))
    return pa.Table.from_arrays(columns, schema=pa.schema(
        [pa.field(f.name, new_type(str(f.type)) or f.type) for f in table.schema]
    ))  # fmt: skip


def _read(path: Path, entry: ManifestFile) -> tuple[pa.Table, dict[str, Any]]:
    """The file's rows as written (types from the manifest), and its header (JSON)."""
    if entry.format == "parquet":
        return pq.read_table(path), {}
    if entry.format == "csv":
        types = {c.name: _arrow_type(c.type) for c in entry.columns}
        options = pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        return pacsv.read_csv(path, convert_options=options), {}
    document = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    schema = pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in entry.columns])
    rows = [
        {k: _json_value(v, schema.field(k).type) for k, v in r.items()} for r in document["rows"]
    ]
    return pa.Table.from_pylist(rows, schema=schema), document


def _json_value(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_date32(kind):
        return date.fromisoformat(value)
    if pa.types.is_decimal(kind) or pa.types.is_floating(kind):
        return Decimal(value) if pa.types.is_decimal(kind) else float(value)
    return value


def _context(
    path: Path, entry: ManifestFile, run: ExportedRun, header: dict[str, Any]
) -> FileContext:
    manifest = run.manifest
    assert manifest is not None
    meta: dict[bytes, bytes] = {}
    if entry.format == "parquet":
        meta = dict(pq.read_schema(path).metadata or {})
    generated = meta.get(b"abaco.generated_at", b"").decode() or header.get("generated_at", "")
    return FileContext(
        dataset=run.dataset,
        table=entry.table,
        as_of_date=manifest.as_of_date.isoformat(),
        run_id=entry.origin(manifest.run_id),
        tool_version=__version__,
        schema_version=manifest.schema_version,
        generated_at=str(generated or iso_time(manifest.finished_at)),
        partition_columns=("as_of_date",),
    )


def _rewrite(
    tree: RuntimeTree, run: ExportedRun, entry: ManifestFile, run_id: str
) -> tuple[Move, ManifestFile]:
    """Write the file anew with the new types under its temporary name; the move and entry."""
    target = tree.data_file(entry.path, run.dataset, run.as_of)
    table, header = _read(target, entry)
    cast = _cast(table)
    if entry.format == "parquet" and "as_of_date" not in cast.column_names:
        cast = cast.append_column("as_of_date", pa.array([run.as_of] * cast.num_rows, pa.date32()))
    temp = RuntimeTree.temp_path(target, run_id)
    with files.open_new(tree, temp, Place.TEMP) as sink:
        writer: BatchWriter = WRITERS[entry.format](
            sink, cast.schema, _context(target, entry, run, header)
        )
        for batch in cast.to_batches():
            writer.write(batch)
        writer.close()
        sink.flush()
        os.fsync(sink.fileno())
        columns = tuple(Column(f.name, str(f.type)) for f in writer.file_schema)
        written = files.written_checksum(sink)
    size, digest = files.checksum_of_staged(tree, temp, Place.TEMP, written)
    new_entry = replace(entry, bytes=size, sha256=digest, columns=columns)
    return Move(tree.relative(temp), entry.path, size), new_entry


def _needs(entry: ManifestFile) -> list[str]:
    return [c.name for c in entry.columns if new_type(c.type) is not None]


def plan(run: ExportedRun) -> Retyped | None:
    manifest = run.manifest
    if manifest is None or run.marked:
        return None
    stale = [e for e in manifest.files if _needs(e)]
    if not stale:
        return None
    return Retyped(
        run.dataset,
        manifest.as_of_date.isoformat(),
        manifest.run_id,
        tuple(e.path for e in stale),
        tuple(sorted({name for e in stale for name in _needs(e)})),
    )


def retype_dataset(
    tree: RuntimeTree, dataset: str, run_id: str, checkpoint: Checkpoint
) -> list[tuple[Retyped, PublishRecord]]:
    """Rewrite every file of ``dataset`` that has a column of an earlier type (call under the
    dataset's lock, after recovery and the layout migration). Raw table extracts keep the
    source's declared types (a numeric(10,6) is not an earlier version's ratio): never retyped."""
    done: list[tuple[Retyped, PublishRecord]] = []
    if dataset == TABLES_DATASET:
        return done
    for run in exported_runs(tree, dataset):
        found = plan(run)
        if found is None or run.manifest is None:
            continue
        moves: list[Move] = []
        entries: list[ManifestFile] = []
        for entry in run.manifest.files:
            if not _needs(entry):
                entries.append(entry)
                continue
            move, new_entry = _rewrite(tree, run, entry, run_id)
            moves.append(move)
            entries.append(new_entry)
        manifest = replace(run.manifest, files=tuple(entries))
        part = DatasetPart(dataset, tuple(moves), (), manifest)
        record = PublishRecord(run_id, manifest.as_of_date, (part,), MIGRATE)
        journal.write(tree, record)
        journal.apply_moves(tree, part, checkpoint)
        journal.apply_rest(tree, record, part, checkpoint)
        done.append((found, record))
    return done
