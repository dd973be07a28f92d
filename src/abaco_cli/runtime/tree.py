"""The runtime tree: where every export, manifest, pointer, journal and lock lives.

exports/<dataset>/<table>/as_of_date=<D>/<dataset>_<table>_<D>.parquet     Parquet, Hive-partitioned
exports/<dataset>/<table>.csv/as_of_date=<D>/<dataset>_<table>_<D>.csv     CSV (one format a folder)
exports/<dataset>/<table>.json/as_of_date=<D>/<dataset>_<table>_<D>.json   JSON
exports/<dataset>/json/<dataset>_<D>.json (and <dataset>_latest.json)       derived files (kpi)
exports/reports/report_<D>.html (report_<D>_<chart>.png|.svg, report_latest.html)  the report
exports/<dataset>/_manifests/<dataset>_<D>.manifest.json                  one per as-of date
exports/<dataset>/latest.json                                             newest as-of date
journal/<run_id>_<D>.publish.json (and .<dataset>.done)                     a publish in progress
locks/<dataset>.lock                                                      one writer at a time
locks/upload_<dataset>.lock                                               one uploader at a time
upload/<dataset>.state.json                                               runs uploaded or pending
audit/audit.jsonl                                                         hash-chained audit log
metrics/abaco.prom                                                        Prometheus textfile

The tree is also the one allow-list of places: ``RuntimeTree.check(path, kind)`` accepts a path
only when it is the kind of place named (a table partition file, a manifest, a lock, ...) below
the root with no symbolic link on the way, whatever a manifest, a pointer or a journal says.
Every delete, overwrite and rename abaco does goes through it (runtime/files.py).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path, PurePosixPath

from abaco_cli.errors import UnsafePathError

PRUNING_SUFFIX = ".pruning"
MANIFEST_SUFFIX = ".manifest.json"
TEMP_SUFFIX = ".tmp"
JOURNAL_SUFFIX = ".publish.json"
UPLOAD_STATE_SUFFIX = ".state.json"
DERIVED_FOLDERS = ("json",)  # folders of files built from a dataset's tables (kpi/json)

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # dataset and table names
FOLDER_FORMATS = ("csv", "json")  # formats with a table folder of their own; Parquet has none
# A table's folder: its name for Parquet (what engines read by default), name.csv, name.json.
TABLE_FOLDER = re.compile(rf"^([a-z][a-z0-9_]{{0,62}})(?:\.({'|'.join(FOLDER_FORMATS)}))?$")
# The dataset `tables` (`abaco export table`: raw extracts of source tables) names each folder
# after its source table: <schema>.<table> for Parquet, <schema>.<table>.csv, <schema>.<table>.json.
TABLES_DATASET = "tables"
SOURCE_TABLE_FOLDER = re.compile(
    rf"^([a-z_][a-z0-9_]{{0,62}}\.[a-z_][a-z0-9_]{{0,62}})(?:\.({'|'.join(FOLDER_FORMATS)}))?$"
)
# The dataset `reports` (`abaco report`): one HTML file a date and its charts as PNG and SVG,
# side by side in the dataset's folder (report_<D>.html, report_<D>_<chart>.png|svg); its
# stable alias report_latest.html follows the newest date, kept out of the manifests.
REPORTS_DATASET = "reports"
REPORT_FORMATS = ("html", "png", "svg")
REPORT_ALIAS = "report_latest.html"
RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_PARTITION = re.compile(rf"^as_of_date=({_DAY})$")
_REPORT_FILE = re.compile(
    rf"^report_({_DAY})(?:_[a-z][a-z0-9_]{{0,62}})?\.({'|'.join(REPORT_FORMATS)})$"
)
_DATA_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_MANIFEST = re.compile(rf"^([a-z][a-z0-9_]*)_({_DAY}){re.escape(MANIFEST_SUFFIX)}$")
_JOURNAL = re.compile(
    rf"^[0-9]{{8}}T[0-9]{{6}}Z-[0-9a-f]{{6}}_{_DAY}"
    rf"({re.escape(JOURNAL_SUFFIX)}|\.[a-z][a-z0-9_]{{0,62}}\.done)$"
)
_TEMP = re.compile(r"^\..+\.[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\.tmp(\.previous)?$")


class Place(StrEnum):
    """The kinds of file abaco writes, each allowed in its own places only."""

    DATA = "data file"  # a table partition file or a derived file, as manifests name them
    ALIAS = "latest alias"  # kpi/json/kpi_latest.json: a copy of the newest derived file
    MANIFEST = "manifest"
    MARKER = "pruning marker"
    POINTER = "latest pointer"
    TEMP = "temporary file"
    JOURNAL = "publish journal"
    LOCK = "lock"
    UPLOAD_STATE = "upload state"  # upload/<dataset>.state.json: runs uploaded or pending


def parse_day(text: str) -> date | None:
    """An ISO date written by abaco (YYYY-MM-DD), else None."""
    if len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _is_latest_name(name: str) -> bool:
    stem = name.split(".", 1)[0]
    return stem == "latest" or stem.endswith("_latest")


@dataclass(frozen=True)
class DataPlace:
    """What a data file's place says: its dataset, its table (or derived folder), its date."""

    dataset: str
    table: str
    as_of: date
    folder_format: str | None = None  # csv or json for <table>.csv/ and <table>.json/


def table_folder(table: str, file_format: str) -> str:
    """The folder of one table in one format: ``loans`` (Parquet), ``loans.csv``, ``loans.json``
    (every folder holds one format, so every engine reads it with its defaults)."""
    return table if file_format not in FOLDER_FORMATS else f"{table}.{file_format}"


@dataclass(frozen=True)
class RuntimeTree:
    """Paths of the runtime tree below one root (resolved once: the root may be a link)."""

    root: Path

    @classmethod
    def at(cls, runtime_dir: Path) -> RuntimeTree:
        return cls(Path(os.path.realpath(runtime_dir)))

    # ---------------------------------------------------------------------------------- paths

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    def dataset_dir(self, dataset: str) -> Path:
        return self.exports / dataset

    def table_dir(self, dataset: str, table: str, file_format: str) -> Path:
        return self.dataset_dir(dataset) / table_folder(table, file_format)

    def partition_dir(self, dataset: str, table: str, as_of: date, file_format: str) -> Path:
        folder = self.table_dir(dataset, table, file_format)
        return folder / f"as_of_date={as_of.isoformat()}"

    def table_file(self, dataset: str, table: str, as_of: date, file_format: str) -> Path:
        name = f"{dataset}_{table}_{as_of.isoformat()}.{file_format}"
        return self.partition_dir(dataset, table, as_of, file_format) / name

    def manifests_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "_manifests"

    def manifest_path(self, dataset: str, as_of: date) -> Path:
        return self.manifests_dir(dataset) / f"{dataset}_{as_of.isoformat()}{MANIFEST_SUFFIX}"

    def latest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "latest.json"

    def lock_path(self, dataset: str) -> Path:
        return self.locks / f"{dataset}.lock"

    def upload_lock_path(self, dataset: str) -> Path:
        """The upload's own lock of a dataset (never the export's: an upload that takes long
        does not hold up the dataset's next export)."""
        return self.locks / f"upload_{dataset}.lock"

    @property
    def upload_dir(self) -> Path:
        return self.root / "upload"

    def upload_state_path(self, dataset: str) -> Path:
        return self.upload_dir / f"{dataset}{UPLOAD_STATE_SUFFIX}"

    def journal_path(self, run_id: str, as_of: date) -> Path:
        return self.journal / f"{run_id}_{as_of.isoformat()}{JOURNAL_SUFFIX}"

    @staticmethod
    def temp_path(target: Path, run_id: str) -> Path:
        """A hidden name beside the target; query engines skip files that start with a dot."""
        return target.with_name(f".{target.name}.{run_id}{TEMP_SUFFIX}")

    @property
    def audit_log(self) -> Path:
        """The default audit log (``audit.path`` overrides it)."""
        return self.root / "audit" / "audit.jsonl"

    @property
    def metrics_file(self) -> Path:
        """The default Prometheus textfile (``metrics.path`` overrides it)."""
        return self.root / "metrics" / "abaco.prom"

    @staticmethod
    def pruning_marker(manifest: Path) -> Path:
        """Where prune moves a manifest before deleting its run's files (hidden: readers skip it).

        A marker left by a crash means "this run is being removed": the next prune finishes it,
        and `audit verify` and `healthcheck` do not count its missing files as damage.
        """
        return manifest.with_name(f".{manifest.name}{PRUNING_SUFFIX}")

    def alias_of(self, data_file: Path) -> Path | None:
        """The stable ``*_latest`` copy of a derived file (``kpi/json/kpi_<D>.json`` ->
        ``kpi/json/kpi_latest.json``), or None for a file that has none."""
        place = self.data_place(self.relative(data_file))
        if place is not None and place.dataset == REPORTS_DATASET:
            own = f"report_{place.as_of.isoformat()}.html"
            return data_file.with_name(REPORT_ALIAS) if data_file.name == own else None
        if place is None or place.table not in DERIVED_FOLDERS:
            return None
        suffix = data_file.name.removeprefix(f"{place.dataset}_{place.as_of.isoformat()}")
        return data_file.with_name(f"{place.dataset}_latest{suffix}")

    def relative(self, path: Path) -> str:
        """A path inside the exports folder, as manifests and pointers record it."""
        return path.relative_to(self.exports).as_posix()

    # ---------------------------------------------------------------------------- allow-list

    def data_place(self, relative: str) -> DataPlace | None:
        """Where a manifest's file entry points, or None when it is no data file's place.

        Allowed: ``<dataset>/<table>[.csv|.json]/as_of_date=<D>/<file>`` (a ``.csv`` or ``.json``
        folder holds files of its format only; a plain table folder held every format before
        the one-format-a-folder layout, and old manifests still name such files; in the dataset
        ``tables`` the table is the source's ``<schema>.<table>``) and
        ``<dataset>/json/<dataset>_<D>.<ext>``, and in the dataset ``reports``
        ``reports/report_<D>[_<chart>].(html|png|svg)``; never a hidden name, a ``*latest*`` alias,
        ``_manifests/`` or ``latest.json``.
        """
        pure = PurePosixPath(relative)
        parts = pure.parts
        if pure.is_absolute() or "\\" in relative or any(p in ("", ".", "..") for p in parts):
            return None
        if len(parts) == 2 and parts[0] == REPORTS_DATASET:
            report = _REPORT_FILE.match(parts[1])
            day = parse_day(report.group(1)) if report else None
            return DataPlace(REPORTS_DATASET, "report", day) if day is not None else None
        pattern = SOURCE_TABLE_FOLDER if parts and parts[0] == TABLES_DATASET else TABLE_FOLDER
        folder = pattern.match(parts[1]) if len(parts) >= 3 else None
        if folder is None or not NAME.match(parts[0]):
            return None
        name = parts[-1]
        if not _DATA_FILE.match(name) or _is_latest_name(name):
            return None
        if len(parts) == 3 and parts[1] in DERIVED_FOLDERS:
            # <dataset>_<D>.<ext>: a derived file always carries its as-of date in its name
            prefix = f"{parts[0]}_"
            day = parse_day(name[len(prefix) : len(prefix) + 10])
            rest = name[len(prefix) + 10 :]
            if not name.startswith(prefix) or day is None or not rest.startswith("."):
                return None
            return DataPlace(parts[0], parts[1], day)
        if len(parts) != 4:
            return None
        match = _PARTITION.match(parts[2])
        day = parse_day(match.group(1)) if match else None
        if day is None:
            return None
        folder_format = folder.group(2)
        if folder_format is not None and not name.endswith(f".{folder_format}"):
            return None  # a <table>.csv/ folder holds CSV files only
        return DataPlace(parts[0], folder.group(1), day, folder_format)

    def _allowed(self, kind: Place, parts: tuple[str, ...]) -> bool:
        """Is ``parts`` (relative to the root) a place for ``kind``?"""
        if not parts or any(p in ("", ".", "..") for p in parts):
            return False
        name = parts[-1]
        in_dataset = len(parts) >= 3 and parts[0] == "exports" and bool(NAME.match(parts[1]))
        if kind is Place.DATA:
            return parts[0] == "exports" and self.data_place("/".join(parts[1:])) is not None
        if kind is Place.ALIAS:
            if len(parts) == 3 and parts[0] == "exports" and parts[1] == REPORTS_DATASET:
                return name == REPORT_ALIAS
            return (
                in_dataset
                and len(parts) == 4
                and parts[2] in DERIVED_FOLDERS
                and name.startswith(f"{parts[1]}_latest.")
            )
        if kind is Place.MANIFEST:
            match = _MANIFEST.match(name)
            return (
                in_dataset
                and len(parts) == 4
                and parts[2] == "_manifests"
                and match is not None
                and match.group(1) == parts[1]
            )
        if kind is Place.MARKER:
            inner = name.removeprefix(".").removesuffix(PRUNING_SUFFIX)
            return (
                name.startswith(".")
                and name.endswith(PRUNING_SUFFIX)
                and self._allowed(Place.MANIFEST, (*parts[:-1], inner))
            )
        if kind is Place.POINTER:
            return in_dataset and len(parts) == 3 and name == "latest.json"
        if kind is Place.TEMP:
            if not _TEMP.match(name):
                return False
            target = name[1:].rsplit(".", 3 if name.endswith(".previous") else 2)[0]
            folder = parts[:-1]
            return any(
                self._allowed(k, (*folder, target))
                for k in (
                    Place.DATA,
                    Place.ALIAS,
                    Place.MANIFEST,
                    Place.POINTER,
                    Place.UPLOAD_STATE,
                )
            ) or (folder == ("journal",) and _JOURNAL.match(target) is not None)
        if kind is Place.UPLOAD_STATE:
            return (
                len(parts) == 2
                and parts[0] == "upload"
                and name.endswith(UPLOAD_STATE_SUFFIX)
                and bool(NAME.match(name.removesuffix(UPLOAD_STATE_SUFFIX)))
            )
        if kind is Place.JOURNAL:
            return len(parts) == 2 and parts[0] == "journal" and _JOURNAL.match(name) is not None
        if kind is Place.LOCK:
            return (
                len(parts) == 2
                and parts[0] == "locks"
                and name.endswith(".lock")
                and bool(NAME.match(name.removesuffix(".lock")))
            )
        return False

    def check(self, path: Path, kind: Place) -> Path:
        """``path`` when it is a place of ``kind`` below the root and no folder on the way (nor
        the file itself) is a symbolic link; UnsafePathError otherwise. Nothing is followed."""
        absolute = Path(os.path.abspath(path))
        try:
            parts = absolute.relative_to(self.root).parts
        except ValueError:
            raise UnsafePathError(f"{path} is outside the runtime tree {self.root}") from None
        if not self._allowed(kind, parts):
            raise UnsafePathError(f"{path} is not a place for a {kind} in the runtime tree")
        current = self.root
        for part in parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                break  # not created yet: nothing below it can be a link
            if stat.S_ISLNK(mode):
                raise UnsafePathError(f"{current} is a symbolic link: abaco never follows one")
            if current != absolute and not stat.S_ISDIR(mode):
                raise UnsafePathError(f"{current} is not a folder")
        return absolute

    def data_file(self, relative: str, dataset: str, as_of: date | None = None) -> Path:
        """The file a manifest entry names, checked: a data place of ``dataset`` (and of the
        date ``as_of`` when given); UnsafePathError otherwise."""
        place = self.data_place(relative)
        if place is None or place.dataset != dataset:
            raise UnsafePathError(f"{relative!r} is not a data file of {dataset}/")
        if as_of is not None and place.as_of != as_of:
            raise UnsafePathError(f"{relative!r} belongs to another as-of date than {as_of}")
        return self.check(self.exports / relative, Place.DATA)
