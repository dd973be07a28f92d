"""`abaco lake`: change data capture of source tables into Delta Lake and a change log
(docs/lake.md). The commands' services: init and the initial load (load.py), sync and its
exactly-once protocol (sync.py), status and verify (status.py), resync, compact and drop
(admin.py), and what they share (common.py)."""

from abaco_cli.services.lake.admin import ResyncResult, compact_lake, drop_lake, resync_lake
from abaco_cli.services.lake.common import TEST_KILL_ENV, Lake, lake_settings
from abaco_cli.services.lake.load import InitResult, init_lake
from abaco_cli.services.lake.status import (
    StatusResult,
    VerifyResult,
    WalFigures,
    lake_state_for_health,
    lake_status,
    verify_lake,
    wal_figures,
)
from abaco_cli.services.lake.sync import SyncResult, sync_lake

__all__ = [
    "TEST_KILL_ENV",
    "InitResult",
    "Lake",
    "ResyncResult",
    "StatusResult",
    "SyncResult",
    "VerifyResult",
    "WalFigures",
    "compact_lake",
    "drop_lake",
    "init_lake",
    "lake_settings",
    "lake_state_for_health",
    "lake_status",
    "resync_lake",
    "sync_lake",
    "verify_lake",
    "wal_figures",
]
