-- analytics/vintages: disbursement-month cohorts x months on book. Month on book m of a cohort
-- is observed at the end of the m-th month after the cohort's month (m = 0: the cohort's own
-- month), or at D for D's own month. Principal collected counts the principal of payments
-- dated on or before the observation date. Written off counts, for the loans written off at D
-- (dpd/delinquency.sql over the cohorts' loans), their written_off_balance at D from the month
-- of their write-off date on (written_off_date when on or before D, else the day days past
-- due first exceeded write_off_after_days): the losses as known at D, net of later recoveries.
WITH cohorts AS (
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
collected AS (
    SELECT l.cohort_month,
           greatest(((extract(year FROM p.paid_on) - extract(year FROM l.cohort_month)) * 12
                     + extract(month FROM p.paid_on) - extract(month FROM l.cohort_month))::integer,
                    0) AS months_on_book,
           sum(p.principal_paid) AS amount
    FROM cohort_loans AS l
    JOIN {payments} AS p ON p.loan_id = l.loan_id AND p.paid_on <= %(as_of)s
    GROUP BY 1, 2
),
d AS ({delinquency}),
written AS (
    SELECT l.cohort_month,
           greatest(((extract(year FROM w.written_off_on) - extract(year FROM l.cohort_month)) * 12
                     + extract(month FROM w.written_off_on) - extract(month FROM l.cohort_month)
                    )::integer, 0) AS months_on_book,
           sum(w.written_off_balance) AS amount
    FROM (
        SELECT d.loan_id, d.written_off_balance,
               CASE WHEN x.written_off_date <= %(as_of)s THEN x.written_off_date
                    ELSE d.first_arrears_date + %(write_off_after_days)s + 1 END AS written_off_on
        FROM d
        JOIN {loans} AS x ON x.loan_id = d.loan_id
        WHERE d.is_written_off AND d.written_off_balance > 0
    ) AS w
    JOIN cohort_loans AS l ON l.loan_id = w.loan_id
    GROUP BY 1, 2
),
curves AS (
    SELECT o.cohort_month, o.months_on_book, o.observation_date,
           sum(coalesce(c.amount, 0)) OVER w AS principal_collected,
           sum(coalesce(x.amount, 0)) OVER w AS written_off_amount
    FROM observations AS o
    LEFT JOIN collected AS c
      ON c.cohort_month = o.cohort_month AND c.months_on_book = o.months_on_book
    LEFT JOIN written AS x
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
       (v.principal_collected / nullif(s.disbursed, 0))::float8    AS principal_collected_pct,
       v.written_off_amount::numeric(18,2)                         AS written_off_amount,
       (v.written_off_amount / nullif(s.disbursed, 0))::float8     AS written_off_pct
FROM curves AS v
JOIN sizes AS s ON s.cohort_month = v.cohort_month
ORDER BY v.cohort_month, v.months_on_book
