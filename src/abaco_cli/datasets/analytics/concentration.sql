-- analytics/concentration: the active loans at D (in scope, not written off, outstanding above
-- the tolerance, from dpd/delinquency.sql) by customer (the top_customers largest), company,
-- product_type, risk_band, customer segment and industry: outstanding, share of the total,
-- cumulative share in rank order and the dimension's Herfindahl-Hirschman index (sum of squared
-- shares over all its keys). A missing attribute is its own key (null).
WITH d AS ({delinquency}),
active AS (
    SELECT d.loan_id, d.customer_id, d.outstanding, l.company, l.product_type, l.risk_band,
           c.segment, c.industry
    FROM d
    JOIN {loans} AS l ON l.loan_id = d.loan_id
    LEFT JOIN {customers} AS c ON c.customer_id = d.customer_id
    WHERE NOT d.is_written_off AND d.outstanding > %(tolerance)s
),
groups AS (
    SELECT 1 AS position, 'customer' AS dimension, a.customer_id AS key, a.loan_id, a.outstanding
    FROM active AS a
    UNION ALL SELECT 2, 'company', a.company, a.loan_id, a.outstanding FROM active AS a
    UNION ALL SELECT 3, 'product_type', a.product_type, a.loan_id, a.outstanding FROM active AS a
    UNION ALL SELECT 4, 'risk_band', a.risk_band, a.loan_id, a.outstanding FROM active AS a
    UNION ALL SELECT 5, 'segment', a.segment, a.loan_id, a.outstanding FROM active AS a
    UNION ALL SELECT 6, 'industry', a.industry, a.loan_id, a.outstanding FROM active AS a
),
totals AS (
    SELECT g.position, g.dimension, g.key, count(*) AS active_loans,
           sum(g.outstanding) AS outstanding
    FROM groups AS g
    GROUP BY g.position, g.dimension, g.key
),
ranked AS (
    SELECT t.*,
           row_number() OVER (PARTITION BY t.position
                              ORDER BY t.outstanding DESC, t.key COLLATE "C" NULLS LAST) AS rank,
           t.outstanding / nullif(sum(t.outstanding) OVER (PARTITION BY t.position), 0) AS share
    FROM totals AS t
),
measured AS (
    SELECT r.*,
           sum(r.share) OVER (PARTITION BY r.position ORDER BY r.rank) AS cumulative_share,
           sum(r.share * r.share) OVER (PARTITION BY r.position) AS hhi
    FROM ranked AS r
)
SELECT %(as_of)s::date                  AS as_of_date,
       m.dimension::text                AS dimension,
       m.rank::integer                  AS rank,
       m.key::text                      AS key,
       m.active_loans::bigint           AS active_loans,
       m.outstanding::numeric(18,2)     AS outstanding,
       m.share::numeric(18,10)                  AS share,
       m.cumulative_share::numeric(18,10)       AS cumulative_share,
       m.hhi::numeric(18,10)                    AS hhi
FROM measured AS m
WHERE m.dimension <> 'customer' OR m.rank <= %(top_customers)s
ORDER BY m.position, m.rank
