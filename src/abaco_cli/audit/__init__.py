"""The audit trail: a hash-chained, append-only JSON Lines log and its optional PostgreSQL copy.

chain.py   canonical JSON, record hashes, locked appends, reading and checking the chain
actor.py   who started a command (user, uid, host, and whether a terminal, cron or systemd)
sink.py    the optional PostgreSQL copy (`abaco db init --audit` creates its table)
"""
