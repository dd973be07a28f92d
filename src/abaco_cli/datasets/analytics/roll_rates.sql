-- analytics/roll_rates: where the loans active at one month-end (period end) stand at the next:
-- written off (written off on or before it: for good, whatever was paid since), in which
-- delinquency bucket, or paid off (nothing left to pay but the tolerance: a loan settled with a
-- cent left is paid off, not cured). Every pair of consecutive dates gets the full matrix,
-- empty cells included. Loans disbursed in between are not part of a transition. The WITH list
-- starts with the arrears history up to D (write-offs) and the states at the dates.
WITH {states},
dates AS (
    SELECT d.k, d.day AS from_date, (%(roll_dates)s::date[])[d.k + 1] AS to_date
    FROM unnest(%(roll_dates)s::date[]) WITH ORDINALITY AS d (day, k)
    WHERE d.k < cardinality(%(roll_dates)s::date[])
),
to_states AS (
    -- -1 paid off, the policy's bucket values, then written off
    SELECT -1 AS value, 'Paid off' AS label
    UNION ALL
    SELECT b.value, b.label
    FROM unnest(%(bucket_values)s::integer[], %(bucket_labels)s::text[]) AS b (value, label)
    UNION ALL
    SELECT cardinality(%(bucket_values)s::integer[]), 'Written off'
),
moves AS (
    -- Each active loan's state at the next date: written off (its gross write-off), else its
    -- bucket and outstanding; a loan missing there owes no more than the tolerance: paid off.
    SELECT t.from_date, t.to_date, f.loan_id, f.dpd_bucket_value AS from_value,
           f.outstanding AS from_outstanding,
           CASE WHEN w.write_off_date <= t.to_date THEN cardinality(%(bucket_values)s::integer[])
                WHEN n.loan_id IS NULL THEN -1
                ELSE n.dpd_bucket_value END AS to_value,
           CASE WHEN w.write_off_date <= t.to_date THEN w.gross_write_off
                ELSE coalesce(n.outstanding, 0) END AS to_balance
    FROM dates AS t
    JOIN states AS f ON f.as_of_date = t.from_date AND NOT f.is_written_off
    LEFT JOIN states AS n ON n.loan_id = f.loan_id AND n.as_of_date = t.to_date
    LEFT JOIN write_offs AS w ON w.loan_id = f.loan_id
),
matrix AS (
    SELECT t.from_date, t.to_date, b.value AS from_value, b.label AS from_label,
           s.value AS to_value, s.label AS to_label
    FROM dates AS t
    CROSS JOIN unnest(%(bucket_values)s::integer[], %(bucket_labels)s::text[]) AS b (value, label)
    CROSS JOIN to_states AS s
),
cells AS (
    SELECT x.from_date, x.to_date, x.from_value, x.from_label, x.to_value, x.to_label,
           count(m.loan_id)                     AS loans,
           coalesce(sum(m.from_outstanding), 0) AS from_outstanding,
           coalesce(sum(m.to_balance), 0)       AS to_balance
    FROM matrix AS x
    LEFT JOIN moves AS m
      ON m.from_date = x.from_date AND m.from_value = x.from_value AND m.to_value = x.to_value
    GROUP BY x.from_date, x.to_date, x.from_value, x.from_label, x.to_value, x.to_label
)
SELECT %(as_of)s::date                    AS as_of_date,
       c.from_date                        AS from_date,
       c.to_date                          AS to_date,
       c.from_value::integer              AS from_bucket_value,
       c.from_label::text                 AS from_bucket,
       c.to_value::integer                AS to_state_value,
       c.to_label::text                   AS to_state,
       c.loans::bigint                    AS loans,
       c.from_outstanding::numeric(18,2)  AS from_outstanding,
       c.to_balance::numeric(18,2)        AS to_balance,
       (c.loans / nullif(sum(c.loans) OVER w, 0)::numeric)::numeric(18,10) AS loans_rate,
       (c.from_outstanding / nullif(sum(c.from_outstanding) OVER w, 0))::numeric(18,10) AS balance_rate
FROM cells AS c
WINDOW w AS (PARTITION BY c.from_date, c.from_value)
ORDER BY c.from_date, c.from_value, c.to_value
