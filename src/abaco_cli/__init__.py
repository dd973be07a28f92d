"""abaco: the command-line export toolkit of the ABACO Financial Intelligence Platform."""

import os
from importlib.metadata import PackageNotFoundError, version

# Arrow's allocator for every abaco process, chosen before pyarrow is first imported (it reads
# this once). The system allocator hands back what a batch freed; Arrow's default (mimalloc)
# kept it, so a long `lake sync` crept up batch after batch: 489-509 MB peak for 600,000
# changes against 433-445 MB, no slower (and `export dpd` of 250,000 loans: 289 -> 265 MB, the
# same 4.7 s). A value the caller set wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
# numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins about 0.1 s
# waiting for work. abaco does no linear algebra: one thread made `import numpy` 134 -> 63 ms
# and 234 -> 60 ms of CPU, in every command. A value the caller set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    __version__ = version("abaco")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
