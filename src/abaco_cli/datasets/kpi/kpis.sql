-- Every KPI of docs/domain.md (definitions version 2) at each KPI date: one row per (date, KPI),
-- in catalogue order, with its unit, numerator, denominator, traffic-light status and definition
-- version. The WITH list starts with the arrears history up to the last history date (write-offs
-- and the days loans reached default_threshold_days) and "states": the loan states
-- (datasets/states/loan_states.sql) at the KPI dates and at the 13 month-ends that each LTM
-- average covers. A state row is a loan owing more than the tolerance; it is active unless
-- written off (a written-off loan carries 0 outstanding).
WITH {states},
kpi_dates AS (
    SELECT d AS as_of_date,
           date_trunc('month', d)::date    AS mtd_from,   -- MTD: first day of the month ...
           (d - interval '1 year')::date   AS ltm_after   -- LTM: after D minus one year ...
    FROM unnest({kpi_dates}::date[]) AS d                 -- ... through D
),
ltm_month_ends AS (
    -- each KPI date's 13 month-ends (the opening one of the LTM window included)
    SELECT y.kpi_date AS as_of_date, y.month_end
    FROM unnest({ltm_for}::date[], {ltm_on}::date[]) AS y (kpi_date, month_end)
),
customer_states AS MATERIALIZED (
    -- One pass over the loan states, summed per date, customer and PAR threshold reached
    -- (par_level: how many of the PAR thresholds the loan's days past due reach).
    SELECT s.as_of_date, s.customer_id,
           CASE WHEN NOT s.is_written_off
                THEN width_bucket(s.days_past_due, %(par_thresholds)s::integer[]) END AS par_level,
           sum(s.outstanding)                                                  AS outstanding,
           count(*) FILTER (WHERE NOT s.is_written_off)                        AS active_loans,
           max(s.days_past_due) FILTER (WHERE NOT s.is_written_off)            AS worst_dpd,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= 30)             AS par_30_amount,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= %(npl_threshold_days)s)
                                                                               AS npl_amount,
           sum(s.outstanding * s.interest_rate_apr)                            AS apr_weighted,
           sum(s.outstanding) FILTER (WHERE s.interest_rate_apr IS NOT NULL)   AS apr_weight,
           sum(s.outstanding * (coalesce(s.origination_fee, 0)
                                + coalesce(s.origination_fee_taxes, 0)) / s.principal)
               FILTER (WHERE s.principal > 0)                                  AS fee_weighted,
           sum(s.outstanding) FILTER (WHERE s.principal > 0)                   AS fee_weight,
           sum(s.outstanding * s.term_days)                                    AS term_weighted,
           sum(s.outstanding) FILTER (WHERE s.term_days IS NOT NULL)           AS term_weight
    FROM states AS s
    GROUP BY 1, 2, 3
),
book AS (
    SELECT d.as_of_date,
           coalesce(sum(c.outstanding), 0)                  AS outstanding_balance,
           coalesce(sum(c.active_loans), 0)                 AS active_loans,
           count(DISTINCT c.customer_id) FILTER (WHERE c.active_loans > 0) AS active_customers,
           coalesce(sum(c.npl_amount), 0)                   AS npl_amount,
           sum(c.apr_weighted)                              AS apr_weighted,
           sum(c.apr_weight)                                AS apr_weight,
           sum(c.fee_weighted)                              AS fee_weighted,
           sum(c.fee_weight)                                AS fee_weight,
           sum(c.term_weighted)                             AS term_weighted,
           sum(c.term_weight)                               AS term_weight
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
customers AS (
    -- per date and customer holding an active loan: its active outstanding, its days past due
    -- (the most of its active loans), its PAR30 amount; ranked by outstanding and by PAR30
    SELECT x.*,
           row_number() OVER (PARTITION BY x.as_of_date
                              ORDER BY x.outstanding DESC, x.customer_id) AS rank,
           row_number() OVER (PARTITION BY x.as_of_date
                              ORDER BY x.par_30_amount DESC, x.customer_id) AS par_30_rank
    FROM (
        SELECT c.as_of_date, c.customer_id, sum(c.outstanding) AS outstanding,
               max(c.worst_dpd) AS days_past_due,
               coalesce(sum(c.par_30_amount) FILTER (WHERE c.active_loans > 0), 0)
                   AS par_30_amount
        FROM customer_states AS c
        JOIN kpi_dates AS d ON d.as_of_date = c.as_of_date
        WHERE c.active_loans > 0
        GROUP BY c.as_of_date, c.customer_id
    ) AS x
),
concentration AS (
    SELECT d.as_of_date,
           coalesce(sum(c.outstanding) FILTER (WHERE c.rank <= 10), 0) AS top10_amount,
           coalesce(sum(c.outstanding) FILTER (WHERE c.rank = 1), 0)   AS largest_amount,
           coalesce(sum(c.outstanding) FILTER (WHERE c.days_past_due >= 30), 0)
                                                                       AS customer_par_30_amount,
           coalesce(sum(c.outstanding) FILTER (WHERE c.days_past_due >= 90), 0)
                                                                       AS customer_par_90_amount,
           coalesce(sum(c.par_30_amount), 0)                           AS par_30_amount,
           coalesce(sum(c.par_30_amount) FILTER (WHERE c.par_30_rank <= 10), 0)
                                                                       AS par_30_top10_amount
    FROM kpi_dates AS d
    LEFT JOIN customers AS c ON c.as_of_date = d.as_of_date
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
ltm_average AS (
    -- The mean outstanding_balance over each KPI date's 13 month-ends (a month-end before the
    -- first loan counts as 0): the denominator of every LTM rate on balances.
    SELECT y.as_of_date, sum(coalesce(b.outstanding_balance, 0)) / 13 AS mean_outstanding
    FROM ltm_month_ends AS y
    LEFT JOIN (
        SELECT c.as_of_date, sum(c.outstanding) AS outstanding_balance
        FROM customer_states AS c
        GROUP BY c.as_of_date
    ) AS b ON b.as_of_date = y.month_end
    GROUP BY y.as_of_date
),
recovered_cash AS (
    -- cash received per day on loans written off on or before that day
    SELECT p.paid_on AS day,
           sum(p.principal_paid + p.interest_paid + p.fee_paid + p.other_paid + p.tax_paid
               + p.fee_tax_paid - p.rebates) AS cash
    FROM write_offs AS w
    JOIN {payments} AS p ON p.loan_id = w.loan_id AND p.paid_on >= w.write_off_date
    JOIN window_days AS x ON p.paid_on > x.after AND p.paid_on <= x.through
    GROUP BY p.paid_on
),
losses AS (
    SELECT d.as_of_date,
           coalesce((SELECT sum(w.gross_write_off) FROM write_offs AS w
                     WHERE w.write_off_date > d.ltm_after AND w.write_off_date <= d.as_of_date), 0)
               AS written_off_ltm,
           coalesce((SELECT sum(r.cash) FROM recovered_cash AS r
                     WHERE r.day > d.ltm_after AND r.day <= d.as_of_date), 0)
               AS recoveries_ltm
    FROM kpi_dates AS d
),
default_events AS (
    -- The days a loan went into default: its days past due reached default_threshold_days
    -- while it was not written off, or it was written off while not in default the day before
    -- (its principal due default_threshold_days or more days before was paid); the balance is
    -- its outstanding principal at the end of the day before.
    SELECT e.loan_id, e.entered_on AS default_date,
           greatest(l.principal - e.paid_before, 0) AS balance
    FROM arrears_entries AS e
    JOIN {loans} AS l ON l.loan_id = e.loan_id
    LEFT JOIN write_offs AS w ON w.loan_id = e.loan_id
    WHERE e.level = %(default_level)s::integer
      AND e.entered_on >= l.disbursement_date
      AND (w.write_off_date IS NULL OR e.entered_on < w.write_off_date)
    UNION ALL
    SELECT w.loan_id, w.write_off_date, w.gross_write_off
    FROM write_offs AS w
    WHERE NOT coalesce(
        (SELECT sum(s.principal_due) FROM {payment_schedule} AS s
         WHERE s.loan_id = w.loan_id
           AND s.due_date <= w.write_off_date - 1 - %(default_level)s::integer)
        - w.paid_before > %(tolerance)s, false)
),
defaulted AS (
    -- per KPI date: the loans with a default in its LTM window, each once, at its first
    SELECT d.as_of_date, count(f.loan_id) AS loans, coalesce(sum(f.balance), 0) AS amount
    FROM kpi_dates AS d
    LEFT JOIN (
        SELECT DISTINCT ON (k.as_of_date, e.loan_id) k.as_of_date, e.loan_id, e.balance
        FROM kpi_dates AS k
        JOIN default_events AS e
          ON e.default_date > k.ltm_after AND e.default_date <= k.as_of_date
        ORDER BY k.as_of_date, e.loan_id, e.default_date
    ) AS f ON f.as_of_date = d.as_of_date
    GROUP BY d.as_of_date
),
exposure AS (
    -- per loan: the history dates it was active at, its disbursement in a KPI window, its
    -- defaults in a KPI window
    SELECT x.loan_id,
           array_agg(x.active_on) FILTER (WHERE x.active_on IS NOT NULL)       AS active_on,
           max(x.disbursed_on)                                                  AS disbursed_on,
           array_agg(x.defaulted_on) FILTER (WHERE x.defaulted_on IS NOT NULL) AS defaulted_on
    FROM (
        SELECT s.loan_id, s.as_of_date AS active_on, NULL::date AS disbursed_on,
               NULL::date AS defaulted_on
        FROM states AS s
        WHERE NOT s.is_written_off
        UNION ALL
        SELECT l.loan_id, NULL, l.disbursement_date, NULL
        FROM {loans} AS l, window_days AS w
        WHERE l.disbursement_date > w.after AND l.disbursement_date <= w.through
        UNION ALL
        SELECT e.loan_id, NULL, NULL, e.default_date
        FROM default_events AS e, window_days AS w
        WHERE e.default_date > w.after AND e.default_date <= w.through
    ) AS x
    GROUP BY x.loan_id
),
exposed AS (
    -- per KPI date: the loans active at any of its 13 month-ends, disbursed in its LTM window
    -- or defaulted in it (so that every defaulted loan is counted below too)
    SELECT d.as_of_date, count(x.loan_id) AS loans
    FROM (
        SELECT k.as_of_date, k.ltm_after, array_agg(m.month_end) AS month_ends
        FROM kpi_dates AS k
        JOIN ltm_month_ends AS m ON m.as_of_date = k.as_of_date
        GROUP BY k.as_of_date, k.ltm_after
    ) AS d
    LEFT JOIN exposure AS x
      ON x.active_on && d.month_ends
      OR (x.disbursed_on > d.ltm_after AND x.disbursed_on <= d.as_of_date)
      OR EXISTS (SELECT FROM unnest(x.defaulted_on) AS z (day)
                 WHERE z.day > d.ltm_after AND z.day <= d.as_of_date)
    GROUP BY d.as_of_date
),
installment_cover AS (
    -- Installments due in the KPI windows: the principal due, and how much of it payments dated
    -- on or before the due date (and 30 days after it) covered, paying the loan's installments
    -- oldest first (due_before: the principal due on the installments before it).
    SELECT i.due_date, i.principal_due,
           least(greatest(
               CASE WHEN i.first_paid_on IS NULL OR i.due_date < i.first_paid_on THEN 0
                    WHEN i.due_date >= i.last_paid_on THEN i.paid_total
                    ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                          WHERE p.loan_id = i.loan_id AND p.paid_on <= i.due_date)
               END - i.due_before, 0), i.principal_due) AS paid_by_due,
           CASE WHEN i.due_date + 30 <= i.through THEN least(greatest(
               CASE WHEN i.first_paid_on IS NULL OR i.due_date + 30 < i.first_paid_on THEN 0
                    WHEN i.due_date + 30 >= i.last_paid_on THEN i.paid_total
                    ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                          WHERE p.loan_id = i.loan_id AND p.paid_on <= i.due_date + 30)
               END - i.due_before, 0), i.principal_due) END AS paid_within_30d
    FROM (
        SELECT s.loan_id, s.due_date, s.principal_due, w.through,
               u.paid_total, u.first_paid_on, u.last_paid_on,
               CASE WHEN u.scheduled = 1 THEN 0
                    ELSE (SELECT coalesce(sum(x.principal_due), 0)
                          FROM {payment_schedule} AS x
                          WHERE x.loan_id = s.loan_id
                            AND (x.due_date, x.installment_no) < (s.due_date, s.installment_no))
               END AS due_before
        FROM {payment_schedule} AS s
        JOIN window_days AS w ON s.due_date > w.after AND s.due_date <= w.through
        JOIN h_loans AS u ON u.loan_id = s.loan_id
        OFFSET 0
    ) AS i
),
repaid AS (
    SELECT d.as_of_date,
           coalesce(sum(c.principal_due), 0)                                      AS due_ltm,
           coalesce(sum(c.paid_by_due), 0)                                        AS on_time,
           coalesce(sum(c.principal_due) FILTER (WHERE c.due_date + 30 <= d.as_of_date), 0)
                                                                                  AS due_30d,
           coalesce(sum(c.paid_within_30d) FILTER (WHERE c.due_date + 30 <= d.as_of_date), 0)
                                                                                  AS within_30d
    FROM kpi_dates AS d
    LEFT JOIN installment_cover AS c ON c.due_date > d.ltm_after AND c.due_date <= d.as_of_date
    GROUP BY d.as_of_date
),
figures AS (
    SELECT d.as_of_date, f.kpi, f.value, f.numerator, f.denominator
    FROM kpi_dates AS d
    JOIN book AS b USING (as_of_date)
    JOIN concentration AS c USING (as_of_date)
    JOIN flows AS x USING (as_of_date)
    JOIN losses AS o USING (as_of_date)
    JOIN defaulted AS df USING (as_of_date)
    JOIN exposed AS ex USING (as_of_date)
    JOIN repaid AS r USING (as_of_date)
    LEFT JOIN ltm_average AS y USING (as_of_date)
    CROSS JOIN LATERAL (VALUES
        ('outstanding_balance', b.outstanding_balance, NULL, NULL),
        ('active_loans', b.active_loans, NULL, NULL),
        ('active_customers', b.active_customers, NULL, NULL),
        ('disbursed_mtd', x.disbursed_mtd, NULL, NULL),
        ('disbursed_ltm', x.disbursed_ltm, NULL, NULL),
        ('collections_mtd', x.collections_mtd, NULL, NULL),
        ('npl_ratio', b.npl_amount / nullif(b.outstanding_balance, 0),
         b.npl_amount, b.outstanding_balance),
        ('customer_par_30', c.customer_par_30_amount / nullif(b.outstanding_balance, 0),
         c.customer_par_30_amount, b.outstanding_balance),
        ('customer_par_90', c.customer_par_90_amount / nullif(b.outstanding_balance, 0),
         c.customer_par_90_amount, b.outstanding_balance),
        ('par30_top10_share', c.par_30_top10_amount / nullif(c.par_30_amount, 0),
         c.par_30_top10_amount, c.par_30_amount),
        ('default_rate_count', df.loans / nullif(ex.loans, 0)::numeric, df.loans, ex.loans),
        ('default_rate_balance', df.amount / nullif(y.mean_outstanding, 0),
         df.amount, y.mean_outstanding),
        ('written_off_ltm', o.written_off_ltm, NULL, NULL),
        ('recoveries_ltm', o.recoveries_ltm, NULL, NULL),
        ('net_credit_loss_ltm', o.written_off_ltm - o.recoveries_ltm, NULL, NULL),
        ('net_loss_rate_ltm', (o.written_off_ltm - o.recoveries_ltm)
                              / nullif(y.mean_outstanding, 0),
         o.written_off_ltm - o.recoveries_ltm, y.mean_outstanding),
        ('collection_rate_mtd', x.collections_mtd / nullif(x.due_mtd, 0),
         x.collections_mtd, x.due_mtd),
        ('repaid_on_time_ltm', r.on_time / nullif(r.due_ltm, 0), r.on_time, r.due_ltm),
        ('repaid_within_30d_ltm', r.within_30d / nullif(r.due_30d, 0), r.within_30d, r.due_30d),
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
         x.revenue_ltm, y.mean_outstanding),
        ('risk_adjusted_yield_ltm', (x.revenue_ltm - o.written_off_ltm + o.recoveries_ltm)
                                    / nullif(y.mean_outstanding, 0),
         x.revenue_ltm - o.written_off_ltm + o.recoveries_ltm, y.mean_outstanding)
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
