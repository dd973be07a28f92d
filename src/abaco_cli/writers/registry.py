"""File formats by name."""

from __future__ import annotations

from abaco_cli.errors import UsageError
from abaco_cli.writers.base import BatchWriter
from abaco_cli.writers.csv_writer import CsvWriter
from abaco_cli.writers.json_writer import JsonWriter
from abaco_cli.writers.parquet_writer import ParquetWriter

WRITERS: dict[str, type[BatchWriter]] = {
    "csv": CsvWriter,
    "parquet": ParquetWriter,
    "json": JsonWriter,
}


def parse_formats(text: str | list[str]) -> list[str]:
    """'csv,parquet' -> ['csv', 'parquet']; unknown or empty formats are a usage error."""
    items = text.split(",") if isinstance(text, str) else text
    formats: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name not in WRITERS:
            known = ", ".join(WRITERS)
            raise UsageError(f"unknown format {item.strip()!r}; choose from {known}")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise UsageError("no format given; choose one or more of " + ", ".join(WRITERS))
    return formats
