-- Every KPI of DOMAIN.md at each KPI date: one row per (date, KPI), in catalogue
-- order, with its unit, numerator, denominator, traffic-light status and definition version.
-- "states" holds the loan states (datasets/states/loan_states.sql) at the KPI dates and at the
-- month-ends that yield_ltm averages over.
WITH kpi_dates AS (
    SELECT d AS as_of_date,
           date_trunc('month', d)::date    AS mtd_from,   -- MTD: first day of the month ...
           (d - interval '1 year')::date   AS ltm_after   -- LTM: after D minus one year ...
    FROM unnest({kpi_dates}::date[]) AS d                 -- ... through D
),
customer_states AS MATERIALIZED (
    -- One pass over the loan states, summed per date, customer and PAR threshold reached
    -- (par_level: how many of the PAR thresholds the loan's days past due reach). Active loans:
    -- not written off, outstanding > 0; a written-off loan carries 0 outstanding, so sums of
    -- outstanding (and sums weighted by it) need no filter.
    SELECT s.as_of_date, s.customer_id,
           CASE WHEN NOT s.is_written_off AND s.outstanding > 0
                THEN width_bucket(s.days_past_due, %(par_thresholds)s::integer[]) END AS par_level,
           sum(s.outstanding)                                                  AS outstanding,
           count(*) FILTER (WHERE NOT s.is_written_off AND s.outstanding > 0)  AS active_loans,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= %(npl_threshold_days)s)
                                                                               AS npl_amount,
           count(*) FILTER (WHERE NOT s.is_written_off AND s.outstanding > 0 AND s.is_default)
                                                                               AS default_loans,
           sum(s.outstanding) FILTER (WHERE s.is_default)                      AS default_amount,
           sum(s.outstanding * s.interest_rate_apr)                            AS apr_weighted,
           sum(s.outstanding) FILTER (WHERE s.interest_rate_apr IS NOT NULL)   AS apr_weight,
           sum(s.outstanding * (coalesce(s.origination_fee, 0)
                                + coalesce(s.origination_fee_taxes, 0)) / s.principal)
               FILTER (WHERE s.principal > 0)                                  AS fee_weighted,
           sum(s.outstanding) FILTER (WHERE s.principal > 0)                   AS fee_weight,
           sum(s.outstanding * s.term_days)                                    AS term_weighted,
           sum(s.outstanding) FILTER (WHERE s.term_days IS NOT NULL)           AS term_weight,
           -- written off in the twelve months to the date: the write-off date is
           -- written_off_date when on or before the date (a later one does not exist yet),
           -- else the day days_past_due first exceeded write_off_after_days
           sum(s.written_off_balance) FILTER (
               WHERE s.is_written_off
                 AND CASE WHEN s.written_off_date <= s.as_of_date THEN s.written_off_date
                          ELSE s.first_arrears_date + %(write_off_after_days)s + 1 END
                     > (s.as_of_date - interval '1 year')::date
           )                                                                   AS written_off_ltm
    FROM ({states}) AS s
    GROUP BY 1, 2, 3
),
book AS (
    SELECT d.as_of_date,
           coalesce(sum(c.outstanding), 0)                  AS outstanding_balance,
           coalesce(sum(c.active_loans), 0)                 AS active_loans,
           count(DISTINCT c.customer_id) FILTER (WHERE c.active_loans > 0) AS active_customers,
           coalesce(sum(c.npl_amount), 0)                   AS npl_amount,
           coalesce(sum(c.default_loans), 0)                AS default_loans,
           coalesce(sum(c.default_amount), 0)               AS default_amount,
           sum(c.apr_weighted)                              AS apr_weighted,
           sum(c.apr_weight)                                AS apr_weight,
           sum(c.fee_weighted)                              AS fee_weighted,
           sum(c.fee_weight)                                AS fee_weight,
           sum(c.term_weighted)                             AS term_weighted,
           sum(c.term_weight)                               AS term_weight,
           coalesce(sum(c.written_off_ltm), 0)              AS written_off_ltm
    FROM kpi_dates AS d
    LEFT JOIN customer_states AS c ON c.as_of_date = d.as_of_date
    GROUP BY d.as_of_date
),
par AS (
    -- PAR_N: the outstanding of the active loans whose days past due reach threshold N
    SELECT d.as_of_date, n.days,
           coalesce(sum(c.outstanding) FILTER (WHERE c.par_level >= n.level), 0) AS amount
    FROM kpi_dates AS d
    CROSS JOIN unnest(%(par_thresholds)s::integer[]) WITH ORDINALITY AS n (days, level)
    LEFT JOIN customer_states AS c ON c.as_of_date = d.as_of_date
    GROUP BY d.as_of_date, n.days
),
customer_balances AS (
    SELECT c.as_of_date, c.customer_id, sum(c.outstanding) AS outstanding,
           row_number() OVER (PARTITION BY c.as_of_date
                              ORDER BY sum(c.outstanding) DESC, c.customer_id) AS rank
    FROM customer_states AS c
    JOIN kpi_dates AS d ON d.as_of_date = c.as_of_date
    WHERE c.active_loans > 0
    GROUP BY c.as_of_date, c.customer_id
),
concentration AS (
    SELECT d.as_of_date,
           coalesce(sum(c.outstanding) FILTER (WHERE c.rank <= 10), 0) AS top10_amount,
           coalesce(sum(c.outstanding) FILTER (WHERE c.rank = 1), 0)   AS largest_amount
    FROM kpi_dates AS d
    LEFT JOIN customer_balances AS c ON c.as_of_date = d.as_of_date
    GROUP BY d.as_of_date
),
window_days AS (
    SELECT min(d.ltm_after) AS after, max(d.as_of_date) AS through FROM kpi_dates AS d
),
daily AS (
    -- Loans disbursed, cash, revenue and installments due per day: each KPI date then sums
    -- the days of its windows.
    SELECT l.disbursement_date AS day, sum(l.principal) AS disbursed, count(*) AS loans,
           0 AS cash, 0 AS revenue, 0 AS due
    FROM {loans} AS l, window_days AS w
    WHERE l.disbursement_date > w.after AND l.disbursement_date <= w.through
    GROUP BY l.disbursement_date
    UNION ALL
    SELECT p.paid_on, 0, 0,
           sum(p.principal_paid + p.interest_paid + p.fee_paid + p.other_paid + p.tax_paid
               + p.fee_tax_paid - p.rebates),
           sum(p.interest_paid + p.fee_paid + p.other_paid - p.rebates), 0
    FROM {payments} AS p, window_days AS w
    WHERE p.paid_on > w.after AND p.paid_on <= w.through
    GROUP BY p.paid_on
    UNION ALL
    SELECT s.due_date, 0, 0, 0, 0,
           sum(s.principal_due + s.interest_due + s.fee_due + s.other_due + s.tax_due)
    FROM {payment_schedule} AS s, window_days AS w
    WHERE s.due_date > w.after AND s.due_date <= w.through
    GROUP BY s.due_date
),
flows AS (
    SELECT d.as_of_date,
           coalesce(sum(x.disbursed) FILTER (WHERE x.day >= d.mtd_from), 0) AS disbursed_mtd,
           coalesce(sum(x.disbursed), 0)                                   AS disbursed_ltm,
           coalesce(sum(x.loans), 0)                                       AS loans_ltm,
           coalesce(sum(x.cash) FILTER (WHERE x.day >= d.mtd_from), 0)     AS collections_mtd,
           coalesce(sum(x.revenue) FILTER (WHERE x.day >= d.mtd_from), 0)  AS revenue_mtd,
           coalesce(sum(x.revenue), 0)                                     AS revenue_ltm,
           coalesce(sum(x.due) FILTER (WHERE x.day >= d.mtd_from), 0)      AS due_mtd
    FROM kpi_dates AS d
    LEFT JOIN daily AS x ON x.day > d.ltm_after AND x.day <= d.as_of_date
    GROUP BY d.as_of_date
),
yield_base AS (
    -- The mean over exactly 12 month-ends: a month-end before the first loan counts as 0.
    SELECT y.kpi_date AS as_of_date, sum(coalesce(b.outstanding_balance, 0)) / 12 AS mean_outstanding
    FROM unnest({yield_for}::date[], {yield_on}::date[]) AS y (kpi_date, month_end)
    LEFT JOIN (
        SELECT c.as_of_date, sum(c.outstanding) AS outstanding_balance
        FROM customer_states AS c
        GROUP BY c.as_of_date
    ) AS b ON b.as_of_date = y.month_end
    GROUP BY y.kpi_date
),
figures AS (
    SELECT d.as_of_date, f.kpi, f.value, f.numerator, f.denominator
    FROM kpi_dates AS d
    JOIN book AS b USING (as_of_date)
    JOIN concentration AS c USING (as_of_date)
    JOIN flows AS x USING (as_of_date)
    LEFT JOIN yield_base AS y USING (as_of_date)
    CROSS JOIN LATERAL (VALUES
        ('outstanding_balance', b.outstanding_balance, NULL, NULL),
        ('active_loans', b.active_loans, NULL, NULL),
        ('active_customers', b.active_customers, NULL, NULL),
        ('disbursed_mtd', x.disbursed_mtd, NULL, NULL),
        ('disbursed_ltm', x.disbursed_ltm, NULL, NULL),
        ('collections_mtd', x.collections_mtd, NULL, NULL),
        ('npl_ratio', b.npl_amount / nullif(b.outstanding_balance, 0),
         b.npl_amount, b.outstanding_balance),
        ('default_rate_count', b.default_loans / nullif(b.active_loans, 0)::numeric,
         b.default_loans, b.active_loans),
        ('default_rate_balance', b.default_amount / nullif(b.outstanding_balance, 0),
         b.default_amount, b.outstanding_balance),
        ('written_off_ltm', b.written_off_ltm, NULL, NULL),
        ('collection_rate_mtd', x.collections_mtd / nullif(x.due_mtd, 0),
         x.collections_mtd, x.due_mtd),
        ('weighted_apr', b.apr_weighted / nullif(b.apr_weight, 0), b.apr_weighted, b.apr_weight),
        ('weighted_fee_rate', b.fee_weighted / nullif(b.fee_weight, 0),
         b.fee_weighted, b.fee_weight),
        ('weighted_term_days', b.term_weighted / nullif(b.term_weight, 0),
         b.term_weighted, b.term_weight),
        ('average_ticket_ltm', x.disbursed_ltm / nullif(x.loans_ltm, 0),
         x.disbursed_ltm, x.loans_ltm),
        ('top10_concentration', c.top10_amount / nullif(b.outstanding_balance, 0),
         c.top10_amount, b.outstanding_balance),
        ('largest_customer_share', c.largest_amount / nullif(b.outstanding_balance, 0),
         c.largest_amount, b.outstanding_balance),
        ('revenue_mtd', x.revenue_mtd, NULL, NULL),
        ('revenue_ltm', x.revenue_ltm, NULL, NULL),
        ('yield_ltm', x.revenue_ltm / nullif(y.mean_outstanding, 0),
         x.revenue_ltm, y.mean_outstanding)
    ) AS f (kpi, value, numerator, denominator)
    UNION ALL
    SELECT p.as_of_date, r.kpi, r.value, r.numerator, r.denominator
    FROM par AS p
    JOIN book AS b USING (as_of_date)
    CROSS JOIN LATERAL (VALUES
        ('par_' || p.days, p.amount / nullif(b.outstanding_balance, 0),
         p.amount, b.outstanding_balance),
        ('par_' || p.days || '_amount', p.amount, NULL, NULL)
    ) AS r (kpi, value, numerator, denominator)
),
catalogue AS (
    SELECT * FROM unnest(
        %(kpi_keys)s::text[], %(kpi_units)s::text[], %(kpi_versions)s::integer[],
        %(kpi_directions)s::text[], %(kpi_green)s::float8[], %(kpi_amber)s::float8[]
    ) WITH ORDINALITY AS k (kpi, unit, version, direction, green, amber, position)
),
rounded AS (
    SELECT f.as_of_date, k.position, k.kpi, k.unit, k.version, k.direction, k.green, k.amber,
           f.value::numeric(38,10) AS value,
           f.numerator::numeric(38,10) AS numerator,
           f.denominator::numeric(38,10) AS denominator
    FROM figures AS f
    JOIN catalogue AS k ON k.kpi = f.kpi
)
SELECT r.as_of_date                        AS as_of_date,
       r.kpi::text                         AS kpi,
       r.unit::text                        AS unit,
       r.value                             AS value,
       r.numerator                         AS numerator,
       r.denominator                       AS denominator,
       (CASE WHEN r.value IS NULL OR r.direction IS NULL THEN NULL
             WHEN r.direction = 'lower_is_better' THEN
                  CASE WHEN r.value <= r.green THEN 'green'
                       WHEN r.value <= r.amber THEN 'amber' ELSE 'red' END
             ELSE CASE WHEN r.value >= r.green THEN 'green'
                       WHEN r.value >= r.amber THEN 'amber' ELSE 'red' END
        END)::text                         AS status,
       r.version::integer                  AS definition_version
FROM rounded AS r
ORDER BY r.as_of_date, r.position
