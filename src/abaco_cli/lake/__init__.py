"""The lake: change data capture of source tables into Delta Lake and a change log (docs/lake.md)."""
