"""The CSV, Parquet and JSON writers, read back with independent parsers (no database)."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abaco_cli.errors import DataError, UsageError
from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.csv_writer import CsvWriter
from abaco_cli.writers.json_writer import JsonWriter
from abaco_cli.writers.parquet_writer import ParquetWriter
from abaco_cli.writers.registry import parse_formats

CONTEXT = FileContext(
    dataset="dpd",
    table="loans",
    as_of_date="2025-06-30",
    run_id="20250701T020000Z-abc123",
    tool_version="9.8.7",
    schema_version=1,
    generated_at="2025-07-01T02:00:00.000Z",
)

SCHEMA = pa.schema(
    [
        pa.field("loan_id", pa.string()),
        pa.field("amount", pa.decimal128(18, 2)),
        pa.field("rate", pa.decimal128(10, 6)),
        pa.field("as_of_date", pa.date32()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        pa.field("days", pa.int32()),
        pa.field("share", pa.float64()),
        pa.field("is_default", pa.bool_()),
    ]
)

TEXTS = ['He said "hi", then left', "line one\nline two", "San Salvador, Cuscatlán", "", None]
AMOUNTS = [
    Decimal("12345678901234.56"),
    Decimal("-0.01"),
    Decimal("0.10"),
    Decimal("0.00"),
    None,
]
RATES = [
    Decimal("0.125000"),
    Decimal("-1.000001"),
    None,
    Decimal("9999.999999"),
    Decimal("0.000001"),
]
DATES = [date(2025, 6, 30), date(2024, 2, 29), date(1999, 12, 31), None, date(2025, 1, 1)]
STAMPS = [
    datetime(2025, 6, 30, 23, 59, 59, 123456, tzinfo=UTC),
    # 12:00 in El Salvador (UTC-6) is 18:00 UTC
    datetime(2025, 6, 30, 12, 0, 0, tzinfo=timezone(timedelta(hours=-6))),
    None,
    datetime(2024, 2, 29, 0, 0, 1, tzinfo=UTC),
    datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
]
DAYS = [0, 31, None, 181, -1]
SHARES = [0.5, 0.1, None, 1.0, 0.0]
FLAGS = [True, False, None, True, False]


def source_batch() -> pa.RecordBatch:
    columns = [TEXTS, AMOUNTS, RATES, DATES, STAMPS, DAYS, SHARES, FLAGS]
    arrays = [
        pa.array(values, type=field.type) for values, field in zip(columns, SCHEMA, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def write_all(writer_cls: type[BatchWriter], *batches: pa.RecordBatch) -> bytes:
    sink = io.BytesIO()
    writer = writer_cls(sink, batches[0].schema if batches else SCHEMA, CONTEXT)
    for batch in batches:
        writer.write(batch)
    writer.close()
    return sink.getvalue()


# --------------------------------------------------------------------------------------- Parquet


def test_parquet_reads_back_exactly_to_the_cent() -> None:
    batch = source_batch()
    data = write_all(ParquetWriter, batch, batch)  # two batches: rows accumulate in order
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 10
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert table.schema.field("rate").type == pa.decimal128(10, 6)
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert table.column("amount").to_pylist() == AMOUNTS + AMOUNTS
    assert table.column("rate").to_pylist() == RATES + RATES
    assert table.column("loan_id").to_pylist() == TEXTS + TEXTS
    assert table.column("as_of_date").to_pylist() == DATES + DATES
    # the same instants, held as UTC
    assert table.column("updated_at").to_pylist()[:5] == [
        datetime(2025, 6, 30, 23, 59, 59, 123456, tzinfo=UTC),
        datetime(2025, 6, 30, 18, 0, 0, tzinfo=UTC),
        None,
        datetime(2024, 2, 29, 0, 0, 1, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
    ]
    # exactness: the decimal digits, not a float approximation
    assert str(table.column("amount")[0].as_py()) == "12345678901234.56"
    assert str(table.column("amount")[2].as_py()) == "0.10"


def test_parquet_is_zstd_compressed() -> None:
    data = write_all(ParquetWriter, source_batch())
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_row_groups >= 1
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            assert meta.row_group(group).column(column).compression == "ZSTD"


def test_parquet_key_value_metadata_names_the_run() -> None:
    data = write_all(ParquetWriter, source_batch())
    kv = pq.read_metadata(io.BytesIO(data)).metadata
    assert kv[b"abaco.dataset"] == b"dpd"
    assert kv[b"abaco.table"] == b"loans"
    assert kv[b"abaco.as_of_date"] == b"2025-06-30"
    assert kv[b"abaco.run_id"] == b"20250701T020000Z-abc123"
    assert kv[b"abaco.tool_version"] == b"9.8.7"


def test_parquet_with_no_rows_keeps_its_schema() -> None:
    data = write_all(ParquetWriter)
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 0
    assert table.schema.field("amount").type == pa.decimal128(18, 2)


# ------------------------------------------------------------------------------------------- CSV


def test_csv_header_crlf_and_row_count() -> None:
    text = write_all(CsvWriter, source_batch()).decode("utf-8")
    # every record ends in CRLF; the only bare LF is the one inside the quoted text field
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 1 + 5
    assert text.replace("\r\n", "").count("\n") == 1
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == SCHEMA.names
    assert len(rows) == 6


def test_csv_values_round_trip_as_plain_text() -> None:
    text = write_all(CsvWriter, source_batch()).decode("utf-8")
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["amount"] for r in records] == ["12345678901234.56", "-0.01", "0.10", "0.00", ""]
    # rates and ratios: no exponent, no trailing zeros beyond their scale; money keeps two places
    assert [r["rate"] for r in records] == ["0.125", "-1.000001", "", "9999.999999", "0.000001"]
    assert [r["as_of_date"] for r in records] == [
        "2025-06-30",
        "2024-02-29",
        "1999-12-31",
        "",
        "2025-01-01",
    ]
    assert [r["days"] for r in records] == ["0", "31", "", "181", "-1"]
    # quotes, commas, newlines and non-ASCII text come back unchanged
    assert [r["loan_id"] for r in records[:4]] == TEXTS[:4]
    assert records[2]["loan_id"] == "San Salvador, Cuscatlán"


def test_csv_is_utf8() -> None:
    data = write_all(CsvWriter, source_batch())
    assert "San Salvador, Cuscatlán".encode() in data
    assert not data.startswith(b"\xef\xbb\xbf")  # no byte-order mark


def test_csv_null_is_empty_and_empty_string_is_quoted() -> None:
    """Python 3.11's csv reader reads both as '', so the distinction is checked on the raw text."""
    text = write_all(CsvWriter, source_batch()).decode("utf-8")
    lines = text.split("\r\n")
    # row 4 (index 3 of the data) has loan_id "" (empty string); row 5 has loan_id NULL
    empty_string_row = lines[1 + 2 + 1]  # header, then row 1 spans two lines (embedded newline)
    null_row = lines[1 + 2 + 2]
    assert empty_string_row.startswith('"",')
    assert null_row.startswith(",")


def test_csv_timestamps_are_iso_with_t_and_z() -> None:
    # BUG (CsvWriter / _iso_timestamps): pyarrow's strftime renders %S with the fractional
    # seconds already (the unit is microseconds) and has no %f directive, so the format
    # "%Y-%m-%dT%H:%M:%S.%fZ" writes the literal ".%f": "2025-06-30T23:59:59.123456.%fZ".
    # Expected: "2025-06-30T23:59:59.123456Z". The fix is the format "%Y-%m-%dT%H:%M:%SZ".
    text = write_all(CsvWriter, source_batch()).decode("utf-8")
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    stamps = [r["updated_at"] for r in records]
    assert stamps == [
        "2025-06-30T23:59:59.123456Z",
        "2025-06-30T18:00:00.000000Z",
        "",
        "2024-02-29T00:00:01.000000Z",
        "2025-01-01T00:00:00.500000Z",
    ]
    for stamp in filter(None, stamps):
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo is not None


def test_csv_without_timestamps_has_bool_and_float_text() -> None:
    schema = pa.schema([("flag", pa.bool_()), ("share", pa.float64())])
    batch = pa.record_batch(
        [pa.array([True, False, None]), pa.array([0.5, None, 1.0])], schema=schema
    )
    sink = io.BytesIO()
    writer = CsvWriter(sink, schema, CONTEXT)
    writer.write(batch)
    writer.close()
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode(), newline="")))
    assert rows == [["flag", "share"], ["true", "0.5"], ["false", ""], ["", "1"]]


# ------------------------------------------------------------------------------------------ JSON


def load_json(data: bytes) -> dict[str, object]:
    text = data.decode("utf-8")
    for word in ("NaN", "Infinity"):
        assert word not in text
    doc = json.loads(
        text, parse_float=Decimal, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")
    )
    assert isinstance(doc, dict)
    return doc


def test_json_is_strict_and_decimals_are_exact() -> None:
    doc = load_json(write_all(JsonWriter, source_batch()))
    assert doc["dataset"] == "dpd"
    assert doc["table"] == "loans"
    assert doc["as_of_date"] == "2025-06-30"
    assert doc["run_id"] == "20250701T020000Z-abc123"
    assert doc["tool_version"] == "9.8.7"
    rows = doc["rows"]
    assert isinstance(rows, list)
    assert [r["amount"] for r in rows] == AMOUNTS
    assert str(rows[2]["amount"]) == "0.10"
    assert str(rows[0]["amount"]) == "12345678901234.56"
    assert [r["rate"] for r in rows] == RATES
    assert [r["loan_id"] for r in rows] == TEXTS
    assert [r["as_of_date"] for r in rows] == [d.isoformat() if d else None for d in DATES]
    assert [r["days"] for r in rows] == DAYS
    assert [r["is_default"] for r in rows] == FLAGS
    assert rows[0]["updated_at"] == "2025-06-30T23:59:59.123456Z"
    assert rows[1]["updated_at"] == "2025-06-30T18:00:00Z"
    assert rows[2]["updated_at"] is None
    assert [c["name"] for c in doc["columns"]] == SCHEMA.names


def test_json_with_no_rows_is_valid() -> None:
    doc = load_json(write_all(JsonWriter))
    assert doc["rows"] == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_json_refuses_non_finite_floats(bad: float) -> None:
    schema = pa.schema([("share", pa.float64())])
    sink = io.BytesIO()
    writer = JsonWriter(sink, schema, CONTEXT)
    writer.write(pa.record_batch([pa.array([0.5])], schema=schema))
    with pytest.raises(DataError):
        writer.write(pa.record_batch([pa.array([0.25, bad])], schema=schema))
    written = sink.getvalue().decode()
    assert "NaN" not in written
    assert "Infinity" not in written
    assert "0.25" not in written  # the refused batch wrote nothing at all


# ----------------------------------------------------------------------------------- parse_formats


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("csv,parquet", ["csv", "parquet"]),
        (" JSON ", ["json"]),
        ("csv, CSV ,csv", ["csv"]),
        ("parquet,csv,parquet,json", ["parquet", "csv", "json"]),
        (["csv", "Parquet"], ["csv", "parquet"]),
    ],
)
def test_parse_formats_accepts_and_deduplicates(text: str | list[str], expected: list[str]) -> None:
    assert parse_formats(text) == expected


@pytest.mark.parametrize("text", ["xlsx", "", " , ", "csv,xlsx", []])
def test_parse_formats_rejects_unknown_and_empty(text: str | list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_formats(text)
    assert caught.value.exit_code == 2


def test_finer_decimals_never_print_an_exponent_or_trailing_zeros() -> None:
    """Arrow writes 0E-10 and 1991.0000000000 for a decimal(18,10); abaco writes 0 and 1991."""
    schema = pa.schema([("ratio", pa.decimal128(18, 10)), ("value", pa.decimal128(38, 10))])
    values = ["0", "1991", "0.0795705030", "-0.5", "0.0000000001", "-12.3000000000"]
    batch = pa.RecordBatch.from_arrays(
        [pa.array([Decimal(v) for v in values], t) for t in schema.types], schema=schema
    )
    expected = ["0", "1991", "0.079570503", "-0.5", "0.0000000001", "-12.3"]
    text = write_all(CsvWriter, batch).decode("utf-8")
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["ratio"] for r in records] == expected
    assert [r["value"] for r in records] == expected
    assert "E" not in text and "e-" not in text
    document = write_all(JsonWriter, batch).decode("utf-8")
    rows = json.loads(document, parse_float=str, parse_int=str)["rows"]  # the text as written
    assert [r["ratio"] for r in rows] == expected
    assert "E" not in document.split('"rows"')[1]


def test_tables_with_ratios_are_written_in_arrows_own_csv_format() -> None:
    """A table with a ratio column is encoded by abaco, the others by Arrow: every other
    column's text must be the same either way (quoted text, empty NULL, true/false, ISO dates
    and timestamps, money with two places), and the ratio itself unquoted."""
    batch = source_batch()
    others = [i for i, f in enumerate(SCHEMA) if f.name != "rate"]
    plain = batch.select(others)
    by_arrow = write_all(CsvWriter, plain).decode("utf-8").split("\r\n")
    by_abaco = write_all(CsvWriter, batch).decode("utf-8").split("\r\n")
    rate_at = SCHEMA.get_field_index("rate")
    assert len(by_arrow) == len(by_abaco)
    for arrow_line, abaco_line in zip(by_arrow, by_abaco, strict=True):
        fields = next(csv.reader([abaco_line])) if abaco_line else []
        expected = next(csv.reader([arrow_line])) if arrow_line else []
        if fields:
            del fields[rate_at]
        assert fields == expected
    assert by_abaco[0].split(",")[rate_at] == '"rate"'
    assert ",0.125," in by_abaco[1]  # unquoted: a number
    assert by_arrow[1].count('"') == by_abaco[1].count('"')  # text quoted alike
