"""What a dataset is: named tables, each one query over the source, with shared parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from typing import Any

import pyarrow as pa
from psycopg import sql

from abaco_cli.settings import Settings

Params = dict[str, Any]


def load_sql(package: str, name: str) -> str:
    """The text of a .sql file shipped as package data."""
    return files(package).joinpath(name).read_text(encoding="utf-8")


def source_names(settings: Settings) -> dict[str, sql.Composable]:
    """The configured source tables as SQL identifiers, keyed by role ({loans}, {payments}, ...)."""
    tables = settings.tables
    return {role: sql.Identifier(*tables.split(role)) for role in tables.roles()}


@dataclass(frozen=True)
class TableSpec:
    """One output table of a dataset: a name (snake_case, stable) and how to build its query.

    ``collect`` keeps the table in memory as well (only for small tables) so that the dataset's
    ``derive`` hook can build further files from it, such as the dashboard's KPI JSON.
    ``weight`` is the query's rough cost relative to one pass of dpd/delinquency.sql over the
    book (a number, or a function of the settings when they change it): when the queries of a
    date run in parallel, the heaviest start first, so that no long query is left running
    alone at the end.
    """

    name: str
    description: str
    build_query: Callable[[Settings], sql.Composed]
    collect: bool = False
    weight: float | Callable[[Settings], float] = 1.0

    def cost(self, settings: Settings) -> float:
        """The query's weight under these settings."""
        return self.weight(settings) if callable(self.weight) else self.weight


@dataclass(frozen=True)
class DerivedFile:
    """A file built from collected tables, e.g. ``kpi/json/kpi_2025-12-31.json``.

    ``path`` is relative to the exports folder and must be ``<dataset>/json/<dataset>_<D>.*``
    (``RuntimeTree.data_place``); its stable ``<dataset>_latest.*`` copy follows the dataset's
    newest as-of date (``RuntimeTree.alias_of``).
    """

    path: str
    table: str
    format: str
    content: bytes
    rows: int


@dataclass(frozen=True)
class DeriveContext:
    """What a derive hook knows about the run."""

    settings: Settings
    as_of: date
    run_id: str
    generated_at: str
    tool_version: str
    tables: Mapping[str, pa.Table]


Derive = Callable[[DeriveContext], list[DerivedFile]]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its folder in the runtime tree, its tables and the parameters of its queries."""

    name: str
    description: str
    refresh: str
    tables: tuple[TableSpec, ...]
    build_params: Callable[[Settings, date], Params]
    schema_version: int = 1
    derive: Derive | None = None

    def table(self, name: str) -> TableSpec:
        for spec in self.tables:
            if spec.name == name:
                return spec
        raise KeyError(name)
