"""abaco: the command-line export toolkit of the ABACO Financial Intelligence Platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("abaco")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
