-- The unique index of a source table whose key columns are all among the given columns, if any:
-- it makes duplicates of those columns impossible (unlike a foreign key, a unique index cannot
-- be switched off), so the check that looks for them reads this instead of the table.
SELECT n.nspname || '.' || ic.relname AS index_name
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_class AS ic ON ic.oid = i.indexrelid
WHERE n.nspname = %(schema)s
  AND c.relname = %(table)s
  AND i.indisunique
  AND i.indisvalid
  AND i.indpred IS NULL
  AND i.indexprs IS NULL
  AND (
      SELECT array_agg(a.attname::text)
      FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k (attnum)
      JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  ) <@ %(columns)s::text[]
ORDER BY i.indisprimary DESC, ic.relname
LIMIT 1
