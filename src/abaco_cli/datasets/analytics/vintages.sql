-- analytics/vintages: disbursement-month cohorts x months on book. Month on book m of a cohort
-- is observed at the end of the m-th month after the cohort's month (m = 0: the cohort's own
-- month), or at D for D's own month. Each event counts from the month on book it happened in,
-- and an observation holds every event up to the end of its month: nothing is restated when a
-- later D is exported.
--   principal_collected  principal of payments dated on or before the observation date
--   ever_30 / ever_90    principal of the cohort's loans whose days past due had reached 30 / 90
--                        (the arrears history's first entry at that level)
--   written_off_amount   gross write-offs (frozen at the write-off date, version 2)
--   recoveries           cash received on the cohort's written-off loans from their write-off
--                        date on; net_loss = written_off_amount - recoveries (it falls when
--                        recoveries come in after the write-off)
-- The WITH list starts with the arrears history up to D over the cohorts' loans.
WITH {history},
cohorts AS (
    SELECT c AS cohort_month FROM unnest(%(cohort_months)s::date[]) AS c
),
cohort_loans AS (
    SELECT l.loan_id, l.principal, date_trunc('month', l.disbursement_date)::date AS cohort_month
    FROM {loans} AS l
    WHERE l.disbursement_date >= (%(cohort_months)s::date[])[1]
      AND l.disbursement_date <= %(as_of)s
),
sizes AS (
    SELECT c.cohort_month, count(l.loan_id) AS loans, coalesce(sum(l.principal), 0) AS disbursed
    FROM cohorts AS c
    LEFT JOIN cohort_loans AS l ON l.cohort_month = c.cohort_month
    GROUP BY c.cohort_month
),
observations AS (
    SELECT c.cohort_month, m AS months_on_book,
           least((c.cohort_month + make_interval(months => m + 1) - interval '1 day')::date,
                 %(as_of)s::date) AS observation_date
    FROM cohorts AS c
    CROSS JOIN LATERAL generate_series(
        0, ((extract(year FROM %(as_of)s::date) - extract(year FROM c.cohort_month)) * 12
            + extract(month FROM %(as_of)s::date) - extract(month FROM c.cohort_month))::integer
    ) AS m
),
events AS (
    -- (cohort, day, amounts): each event of a cohort's loan on its day, placed below at the
    -- month on book of that day
    SELECT l.cohort_month, p.paid_on AS day, p.principal_paid AS collected, 0 AS ever_30,
           0 AS ever_90, 0 AS written_off, 0 AS recovered
    FROM cohort_loans AS l
    JOIN {payments} AS p ON p.loan_id = l.loan_id AND p.paid_on <= %(as_of)s
    UNION ALL
    SELECT l.cohort_month, e.first_on, 0,
           CASE WHEN e.level = %(ever_30_level)s::integer THEN l.principal ELSE 0 END,
           CASE WHEN e.level = %(ever_90_level)s::integer THEN l.principal ELSE 0 END, 0, 0
    FROM (
        SELECT a.loan_id, a.level, min(a.entered_on) AS first_on
        FROM arrears_entries AS a
        WHERE a.level IN (%(ever_30_level)s::integer, %(ever_90_level)s::integer)
        GROUP BY a.loan_id, a.level
    ) AS e
    JOIN cohort_loans AS l ON l.loan_id = e.loan_id
    UNION ALL
    SELECT l.cohort_month, w.write_off_date, 0, 0, 0, w.gross_write_off, 0
    FROM write_offs AS w
    JOIN cohort_loans AS l ON l.loan_id = w.loan_id
    UNION ALL
    SELECT l.cohort_month, p.paid_on, 0, 0, 0, 0,
           p.principal_paid + p.interest_paid + p.fee_paid + p.other_paid + p.tax_paid
           + p.fee_tax_paid - p.rebates
    FROM write_offs AS w
    JOIN cohort_loans AS l ON l.loan_id = w.loan_id
    JOIN {payments} AS p
      ON p.loan_id = w.loan_id AND p.paid_on >= w.write_off_date AND p.paid_on <= %(as_of)s
),
placed AS (
    SELECT e.cohort_month,
           greatest(((extract(year FROM e.day) - extract(year FROM e.cohort_month)) * 12
                     + extract(month FROM e.day) - extract(month FROM e.cohort_month))::integer,
                    0) AS months_on_book,
           sum(e.collected) AS collected, sum(e.ever_30) AS ever_30, sum(e.ever_90) AS ever_90,
           sum(e.written_off) AS written_off, sum(e.recovered) AS recovered
    FROM events AS e
    GROUP BY 1, 2
),
curves AS (
    SELECT o.cohort_month, o.months_on_book, o.observation_date,
           sum(coalesce(x.collected, 0)) OVER w   AS principal_collected,
           sum(coalesce(x.ever_30, 0)) OVER w     AS ever_30_amount,
           sum(coalesce(x.ever_90, 0)) OVER w     AS ever_90_amount,
           sum(coalesce(x.written_off, 0)) OVER w AS written_off_amount,
           sum(coalesce(x.recovered, 0)) OVER w   AS recoveries
    FROM observations AS o
    LEFT JOIN placed AS x
      ON x.cohort_month = o.cohort_month AND x.months_on_book = o.months_on_book
    WINDOW w AS (PARTITION BY o.cohort_month ORDER BY o.months_on_book)
)
SELECT %(as_of)s::date                                             AS as_of_date,
       v.cohort_month                                              AS cohort_month,
       v.months_on_book::integer                                   AS months_on_book,
       v.observation_date                                          AS observation_date,
       s.loans::bigint                                             AS cohort_loans,
       s.disbursed::numeric(18,2)                                  AS cohort_disbursed,
       v.principal_collected::numeric(18,2)                        AS principal_collected,
       (v.principal_collected / nullif(s.disbursed, 0))::numeric(18,10)    AS principal_collected_pct,
       v.written_off_amount::numeric(18,2)                         AS written_off_amount,
       (v.written_off_amount / nullif(s.disbursed, 0))::numeric(18,10)     AS written_off_pct,
       v.ever_30_amount::numeric(18,2)                             AS ever_30_amount,
       (v.ever_30_amount / nullif(s.disbursed, 0))::numeric(18,10) AS ever_30_pct,
       v.ever_90_amount::numeric(18,2)                             AS ever_90_amount,
       (v.ever_90_amount / nullif(s.disbursed, 0))::numeric(18,10) AS ever_90_pct,
       v.recoveries::numeric(18,2)                                 AS recoveries,
       (v.written_off_amount - v.recoveries)::numeric(18,2)        AS net_loss,
       ((v.written_off_amount - v.recoveries) / nullif(s.disbursed, 0))::numeric(18,10)
                                                                   AS net_loss_pct
FROM curves AS v
JOIN sizes AS s ON s.cohort_month = v.cohort_month
ORDER BY v.cohort_month, v.months_on_book
