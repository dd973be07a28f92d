"""The runtime tree: where every export, manifest, pointer and lock lives.

exports/<dataset>/<table>/as_of_date=<D>/<dataset>_<table>_<D>.<format>   Hive-partitioned data
exports/<dataset>/_manifests/<dataset>_<D>.manifest.json                  one per as-of date
exports/<dataset>/latest.json                                             newest as-of date
locks/<dataset>.lock                                                      one writer at a time
audit/audit.jsonl                                                         hash-chained audit log
metrics/abaco.prom                                                        Prometheus textfile
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

PRUNING_SUFFIX = ".pruning"


@dataclass(frozen=True)
class RuntimeTree:
    root: Path

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def dataset_dir(self, dataset: str) -> Path:
        return self.exports / dataset

    def partition_dir(self, dataset: str, table: str, as_of: date) -> Path:
        return self.dataset_dir(dataset) / table / f"as_of_date={as_of.isoformat()}"

    def table_file(self, dataset: str, table: str, as_of: date, file_format: str) -> Path:
        name = f"{dataset}_{table}_{as_of.isoformat()}.{file_format}"
        return self.partition_dir(dataset, table, as_of) / name

    def manifests_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "_manifests"

    def manifest_path(self, dataset: str, as_of: date) -> Path:
        return self.manifests_dir(dataset) / f"{dataset}_{as_of.isoformat()}.manifest.json"

    def latest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "latest.json"

    def lock_path(self, dataset: str) -> Path:
        return self.locks / f"{dataset}.lock"

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

    def relative(self, path: Path) -> str:
        """A path inside the exports folder, as manifests and pointers record it."""
        return path.relative_to(self.exports).as_posix()
