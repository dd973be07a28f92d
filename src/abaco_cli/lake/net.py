"""A batch's net effect on one table: the last change of each key, after the last truncate.

The Delta table gets one MERGE per batch (lake/delta.py): every key the batch touched appears
once, as ``upsert`` (its last change inserted or updated it: the full row) or ``delete``; a
truncate inside the batch empties the table first (``truncated``), so only the changes after
the last truncate count. Chunks of one batch arrive in order; ``NetChanges`` folds them as they
come, so it holds one row per key touched, never the batch's whole history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ORDER = "_order"  # the position of a change in the batch (rows arrive in LSN order)


class NetChanges:
    """The net changes of one table over a batch, fed chunk by chunk."""

    def __init__(self, key: Sequence[str]) -> None:
        self.key = list(key)
        self.truncated = False
        self._net: pa.Table | None = None
        self._seen = 0

    def add(self, changes: pa.Table) -> None:
        """Fold in the next changes (CHANGE_COLUMNS then the table's columns, in order)."""
        if changes.num_rows == 0:
            return
        order = pa.array(np.arange(self._seen, self._seen + changes.num_rows, dtype=np.int64))
        self._seen += changes.num_rows
        changes = changes.append_column(ORDER, order)
        truncates = np.flatnonzero(
            pc.equal(changes["_op"], "truncate").to_numpy(zero_copy_only=False)
        )
        if truncates.size:
            self.truncated = True
            self._net = None
            changes = changes.slice(int(truncates[-1]) + 1)
        if changes.num_rows == 0:
            return
        both = (
            changes
            if self._net is None
            else pa.concat_tables([self._net, changes], promote_options="default")
        )
        self._net = _last_per_key(both, self.key)

    @property
    def keys(self) -> int:
        """Keys held now (the rows a MERGE of them would send)."""
        return 0 if self._net is None else self._net.num_rows

    def clear(self) -> None:
        """Forget the keys (they were merged); a truncate merged with them is done too."""
        self._net = None
        self.truncated = False

    def result(self, columns: Sequence[str]) -> pa.Table | None:
        """The table's ``columns`` and ``_op`` (upsert or delete), one row per key in the order
        of their last change; None when no key changed."""
        if self._net is None or self._net.num_rows == 0:
            return None
        net = self._net.sort_by(ORDER)
        op = pc.if_else(pc.equal(net["_op"], "delete"), "delete", "upsert")
        present = [c for c in columns if c in net.column_names]
        return net.select(present).append_column("_op", op)


def _last_per_key(changes: pa.Table, key: list[str]) -> pa.Table:
    """The row with the highest ORDER of each key."""
    grouped = changes.select([*key, ORDER]).group_by(key, use_threads=False)
    last = grouped.aggregate([(ORDER, "max")])[f"{ORDER}_max"]
    positions = pc.index_in(last, changes[ORDER])
    return changes.take(positions)
