"""Issue 10, part 1: every exported table folder is readable by every engine with its defaults.

A run of every dataset in every format, on a seeded book; then each table's Parquet folder is
read by pyarrow.dataset, pandas, DuckDB and polars exactly as the README's "Reading the
exports" shows (the recipes below are checked to appear there verbatim), and each CSV folder by
DuckDB and pyarrow. Money must arrive as decimal(18,2) and `as_of_date` as a date, and every
engine must see every row the manifest counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from abaco_cli.datasets import REGISTRY

DAY = "2025-12-31"
README = Path(__file__).resolve().parents[1] / "README.md"

# The README's recipes, with {folder} standing for a table folder such as
# abaco_runtime/exports/dpd/loans (Parquet) or abaco_runtime/exports/dpd/loans.csv (CSV).
PYARROW = (
    'pyarrow.dataset.dataset("{folder}", format="parquet", partitioning=pyarrow.dataset.'
    'partitioning(pyarrow.schema([("as_of_date", pyarrow.date32())]), flavor="hive"))'
)
PANDAS = 'pandas.read_parquet("{folder}")'
DUCKDB = "SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true)"
POLARS = 'polars.read_parquet("{folder}/*/*.parquet", hive_partitioning=True)'
DUCKDB_CSV = "SELECT * FROM read_csv('{folder}/*/*.csv', header = true, hive_partitioning = false)"


@pytest.fixture(scope="module")
def tree(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, template_db: str
) -> Iterator[Path]:
    """One seeded book, every dataset exported in every format (module-wide: it is slow)."""
    import os

    from tests.ops import run_abaco

    name = f"abaco_engines_{os.getpid()}"
    dsn = pg_server.create_database(name, template=template_db)
    folder = tmp_path_factory.mktemp("engines")
    env = {"ABACO_DATABASE_URL": dsn, "ABACO_RUNTIME_DIR": str(folder / "abaco_runtime")}
    seeded = run_abaco(["db", "seed", "--loans", "400", "--seed", "3"], env, folder)
    assert seeded.returncode == 0, seeded.stderr
    done = run_abaco(
        ["export", "all", "--as-of", DAY, "--format", "csv,parquet,json", "--months", "3"],
        env,
        folder,
    )
    assert done.returncode == 0, done.stderr
    yield folder / "abaco_runtime" / "exports"
    pg_server.drop_database(name)


def manifest(exports: Path, dataset: str) -> dict[str, Any]:
    path = exports / dataset / "_manifests" / f"{dataset}_{DAY}.manifest.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def tables() -> list[tuple[str, str]]:
    return [(spec.name, table.name) for spec in REGISTRY.values() for table in spec.tables]


def rows_of(exports: Path, dataset: str, table: str, file_format: str) -> int:
    found = [
        f["rows"]
        for f in manifest(exports, dataset)["files"]
        if f["table"] == table and f["format"] == file_format
    ]
    assert len(found) == 1
    return int(found[0])


def money_columns(exports: Path, dataset: str, table: str) -> list[str]:
    entry = next(
        f
        for f in manifest(exports, dataset)["files"]
        if f["table"] == table and f["format"] == "parquet"
    )
    return [c["name"] for c in entry["columns"] if c["type"] == "decimal128(18, 2)"]


def test_the_readme_shows_these_recipes() -> None:
    text = README.read_text(encoding="utf-8")
    for recipe in (PYARROW, PANDAS, DUCKDB, POLARS, DUCKDB_CSV):
        example = recipe.format(folder="abaco_runtime/exports/dpd/loans").replace(
            "dpd/loans/*/*.csv", "dpd/loans.csv/*/*.csv"
        )
        assert example in text, example


def test_every_folder_holds_one_format(tree: Path) -> None:
    for dataset in REGISTRY:
        for folder in (tree / dataset).iterdir():
            if folder.name.startswith(("_", ".")) or not folder.is_dir():
                continue
            suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
            expected = (
                {".json"} if folder.name == "json" else {f".{folder.suffix[1:] or 'parquet'}"}
            )
            assert suffixes == expected, (folder, suffixes)


@pytest.mark.parametrize(("dataset", "table"), tables())
def test_parquet_folders_read_by_every_engine(tree: Path, dataset: str, table: str) -> None:
    folder = tree / dataset / table
    expected_rows = rows_of(tree, dataset, table, "parquet")
    money = money_columns(tree, dataset, table)

    # pyarrow.dataset, with the partitioning schema the README gives
    arrow = ds.dataset(
        str(folder),
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("as_of_date", pa.date32())]), flavor="hive"),
    ).to_table()
    assert arrow.num_rows == expected_rows
    assert arrow.schema.field("as_of_date").type == pa.date32()
    for name in money:
        assert arrow.schema.field(name).type == pa.decimal128(18, 2), name

    # pandas: every row; money as exact Decimal objects
    frame = pd.read_parquet(str(folder))
    assert len(frame) == expected_rows
    for name in money:
        values = [v for v in frame[name] if v is not None and not pd.isna(v)]
        assert all(isinstance(v, Decimal) for v in values), name

    # DuckDB: as_of_date a DATE from the folder name, money DECIMAL(18,2)
    con = duckdb.connect()
    query = DUCKDB.format(folder=folder)
    relation = con.sql(query)
    types = dict(zip(relation.columns, [str(t) for t in relation.types], strict=True))
    assert types["as_of_date"] == "DATE"
    for name in money:
        assert types[name] == "DECIMAL(18,2)", name
    assert con.execute(f"SELECT count(*) FROM ({query})").fetchall() == [(expected_rows,)]
    dates = con.execute(f"SELECT DISTINCT as_of_date FROM ({query})").fetchall()
    assert dates in ([], [(date.fromisoformat(DAY),)])

    # polars
    polar = pl.read_parquet(f"{folder}/*/*.parquet", hive_partitioning=True)
    assert polar.height == expected_rows
    if expected_rows:
        assert polar.schema["as_of_date"] == pl.Date
    for name in money:
        assert polar.schema[name] == pl.Decimal(18, 2), name


@pytest.mark.parametrize(("dataset", "table"), tables())
def test_csv_folders_read_by_duckdb_and_pyarrow(tree: Path, dataset: str, table: str) -> None:
    folder = tree / dataset / f"{table}.csv"
    expected_rows = rows_of(tree, dataset, table, "csv")
    con = duckdb.connect()
    query = DUCKDB_CSV.format(folder=folder)
    assert con.execute(f"SELECT count(*) FROM ({query})").fetchall() == [(expected_rows,)]
    arrow = ds.dataset(str(folder), format="csv").to_table()
    assert arrow.num_rows == expected_rows
    # money prints as plain decimals: the CSV and the Parquet sums agree to the cent
    for name in money_columns(tree, dataset, table):
        csv_sum = con.execute(
            f"SELECT sum(CAST({name} AS DECIMAL(18,2))) FROM ({query})"
        ).fetchall()
        parquet = con.execute(
            f"SELECT sum({name}) FROM read_parquet('{tree / dataset / table}/*/*.parquet')"
        ).fetchall()
        assert csv_sum == parquet, name


def test_money_is_exact_across_engines(tree: Path) -> None:
    """The outstanding balance of dpd/loans, summed by each engine, is the same to the cent."""
    folder = tree / "dpd" / "loans"
    arrow = ds.dataset(str(folder), format="parquet").to_table()
    total = sum((v for v in arrow.column("outstanding").to_pylist() if v is not None), Decimal(0))
    by_duckdb = (
        duckdb.connect()
        .execute(f"SELECT sum(outstanding) FROM ({DUCKDB.format(folder=folder)})")
        .fetchall()
    )
    by_polars = pl.read_parquet(f"{folder}/*/*.parquet", hive_partitioning=True)["outstanding"]
    assert by_duckdb == [(total,)]
    assert Decimal(str(by_polars.sum())) == total
    assert total > 0


def test_a_dataset_folder_has_one_folder_per_table_and_format(tree: Path) -> None:
    names = sorted(p.name for p in (tree / "dpd").iterdir() if p.is_dir())
    assert names == ["_manifests", "aging", "aging.csv", "aging.json", "loans", "loans.csv",
                     "loans.json"]  # fmt: skip


def test_every_csv_and_json_number_is_written_as_a_person_writes_it(tree: Path) -> None:
    """Issue 10, part 2: money with its two places, ratios without exponent or trailing zeros,
    counts as integers; in every CSV and JSON file of a run of every dataset."""
    import csv
    import re

    money = re.compile(r"^-?\d+\.\d{2}$")
    finer = re.compile(r"^-?\d+(\.\d{0,9}[1-9])?$")  # at most 10 places, none trailing
    count = re.compile(r"^-?\d+$")
    checked = 0
    for dataset in REGISTRY:
        data = manifest(tree, dataset)
        for entry in data["files"]:
            if entry["format"] not in ("csv", "json"):
                continue
            kinds = {c["name"]: c["type"] for c in entry["columns"]}
            path = tree / entry["path"]
            if entry["format"] == "csv":
                rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
            else:
                document = json.loads(path.read_text(encoding="utf-8"), parse_float=str,
                                      parse_int=str)  # fmt: skip
                if "rows" not in document:
                    continue  # the dashboard's document (kpi/json): its own schema
                rows = document["rows"]
            for row in rows:
                for name, value in row.items():
                    kind = kinds.get(name, "")
                    if value in ("", None) or not (kind.startswith(("decimal", "int"))):
                        continue
                    text = str(value)
                    assert "e" not in text.lower(), (entry["path"], name, text)
                    if kind.endswith(", 2)"):
                        assert money.match(text), (entry["path"], name, text)
                    elif kind.startswith("decimal"):
                        assert finer.match(text), (entry["path"], name, text)
                    else:
                        assert count.match(text), (entry["path"], name, text)
                    checked += 1
    assert checked > 1000


def test_csv_ratios_are_numbers_to_a_csv_reader(tree: Path) -> None:
    """DuckDB's CSV sniffer reads a ratio column of a CSV file as a number, not as text."""
    folder = tree / "kpi" / "snapshot.csv"
    relation = duckdb.connect().sql(DUCKDB_CSV.format(folder=folder))
    types = dict(zip(relation.columns, [str(t) for t in relation.types], strict=True))
    assert types["value"] == "DOUBLE" or types["value"].startswith("DECIMAL"), types["value"]
    assert types["definition_version"] in ("BIGINT", "INTEGER")
