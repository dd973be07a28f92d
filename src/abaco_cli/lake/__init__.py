"""The lake: change data capture of source tables into Delta Lake and a change log.

See docs/lake.md.
"""
