"""The table of every type the whole-table reader and the change reader decode, and its rows:
shared by tests/test_binary_copy.py and tests/test_lake_changes.py (the schema x exists)."""

from __future__ import annotations

ALL_TYPES = """
    CREATE TYPE x.mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN x.money2 AS numeric(12,2);
    CREATE TABLE x.every (
        id        bigint PRIMARY KEY,
        flag      boolean,
        small     smallint,
        medium    integer,
        big       bigint,
        real4     real,
        double8   double precision,
        money     numeric(18,2),
        wide      numeric(38,10),
        open      numeric,
        words     text,
        code      varchar(12),
        padded    char(5),
        day       date,
        at_local  timestamp,
        at_utc    timestamptz,
        ident     uuid,
        doc_json  json,
        doc       jsonb,
        raw       bytea,
        feeling   x.mood,
        price     x.money2
    );
"""


def every_type_rows(rows: int) -> str:
    """An INSERT of ``rows`` rows of varied values into x.every (NULLs, empty strings, limits)."""
    return """
        INSERT INTO x.every
        SELECT g,
               CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN true ELSE false END,
               (g % 65535 - 32767)::smallint,
               CASE WHEN g % 11 = 0 THEN NULL ELSE (g * 7919) % 2147483647 - 1073741823 END,
               CASE WHEN g % 2 = 0 THEN g * 922337203685477 ELSE -g * 922337203685477 END,
               CASE WHEN g % 13 = 0 THEN NULL ELSE (g / 7.0)::real END,
               CASE WHEN g % 17 = 0 THEN NULL ELSE g * 1.0e-3 - 12.345678901234 END,
               CASE WHEN g % 19 = 0 THEN NULL
                    ELSE round(((g * 7919) % 100000000000) / 7.0 - 5e9, 2) END,
               CASE WHEN g % 23 = 0 THEN NULL
                    ELSE round(((g * 104729) % 1000000007)::numeric * 1234567.891 / 3, 10)
                         * (CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END) END,
               CASE WHEN g % 29 = 0 THEN NULL ELSE round(g::numeric / 8, 3) - 100 END,
               CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN ''
                    WHEN 2 THEN E'tab\\tnew\\nline\\\\back ñ €' ELSE repeat('w', g % 40) END,
               CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g END,
               CASE WHEN g % 6 = 0 THEN NULL ELSE left('ab' || g, 4) END,
               CASE WHEN g % 31 = 0 THEN NULL ELSE date '1899-12-31' + (g * 37) % 60000 END,
               timestamp '1901-12-13 20:45:52.5' + g * interval '1 day 3 hours 7.25 seconds',
               CASE WHEN g % 37 = 0 THEN NULL
                    ELSE timestamptz '2038-01-19 03:14:08.123456+00'
                         - g * interval '2 days 11 minutes 0.000001 seconds' END,
               CASE WHEN g % 41 = 0 THEN NULL ELSE md5(g::text)::uuid END,
               CASE WHEN g % 43 = 0 THEN NULL
                    ELSE ('{"b": ' || g || ', "a": [1, "x\\ty"], "ü": null}')::json END,
               CASE WHEN g % 47 = 0 THEN NULL
                    ELSE ('{"b": ' || g || ', "a": [1, "x\\ty"], "ü": null}')::jsonb END,
               CASE WHEN g % 53 = 0 THEN NULL WHEN g % 53 = 1 THEN ''::bytea
                    ELSE decode(md5(g::text), 'hex') || '\\x00ff'::bytea END,
               CASE WHEN g % 59 = 0 THEN NULL
                    ELSE (enum_range(NULL::x.mood))[1 + g % 3] END,
               CASE WHEN g % 61 = 0 THEN NULL ELSE (g % 100000) / 4.0 END
        FROM generate_series(1, ROWS) AS g
        """.replace("ROWS", str(int(rows)))
