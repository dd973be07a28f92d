"""What a dataset is: named tables, each one query over the source, with shared parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib.resources import files
from typing import Any

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
    """One output table of a dataset: a name (snake_case, stable) and how to build its query."""

    name: str
    description: str
    build_query: Callable[[Settings], sql.Composed]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its folder in the runtime tree, its tables and the parameters of its queries."""

    name: str
    description: str
    refresh: str
    tables: tuple[TableSpec, ...]
    build_params: Callable[[Settings, date], Params]
    schema_version: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)

    def table(self, name: str) -> TableSpec:
        for spec in self.tables:
            if spec.name == name:
                return spec
        raise KeyError(name)
