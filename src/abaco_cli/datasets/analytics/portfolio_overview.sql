-- analytics/portfolio_overview: one row per calendar month of the window. Flows (disbursed,
-- collections, revenue, installments due, gross write-offs, recoveries) cover the month from
-- its first day to its period end; stocks (outstanding, active loans, PAR, NPL) are the loan
-- states at the period end: the month's last day, or D for D's own month. The WITH list starts
-- with the arrears history up to D (write-offs) and the states at the period ends.
WITH {states},
periods AS (
    SELECT * FROM unnest(%(period_months)s::date[], %(period_ends)s::date[])
        AS p (month, period_end)
),
customer_book AS (
    -- per period end and customer first, so that active customers need no DISTINCT; a state
    -- row owes more than the tolerance and is active unless written off (0 outstanding)
    SELECT s.as_of_date, s.customer_id,
           sum(s.outstanding)                                                AS outstanding,
           count(*) FILTER (WHERE NOT s.is_written_off)                      AS active_loans,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= 30)           AS par_30_amount,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= 90)           AS par_90_amount,
           sum(s.outstanding) FILTER (WHERE s.days_past_due >= %(npl_threshold_days)s)
                                                                             AS npl_amount,
           sum(s.outstanding * s.interest_rate_apr)                          AS apr_weighted,
           sum(s.outstanding) FILTER (WHERE s.interest_rate_apr IS NOT NULL) AS apr_weight
    FROM states AS s
    GROUP BY s.as_of_date, s.customer_id
),
losses AS (
    -- gross write-offs (frozen) of the loans whose write-off date falls in the month, and the
    -- cash received in it on loans written off on or before the payment date
    SELECT p.month,
           coalesce((SELECT sum(w.gross_write_off) FROM write_offs AS w
                     WHERE w.write_off_date >= p.month AND w.write_off_date <= p.period_end), 0)
               AS written_off_amount,
           coalesce((SELECT sum(x.principal_paid + x.interest_paid + x.fee_paid + x.other_paid
                                + x.tax_paid + x.fee_tax_paid - x.rebates)
                     FROM write_offs AS w
                     JOIN {payments} AS x
                       ON x.loan_id = w.loan_id AND x.paid_on >= w.write_off_date
                     WHERE x.paid_on >= p.month AND x.paid_on <= p.period_end), 0)
               AS recoveries
    FROM periods AS p
),
book AS (
    SELECT p.month,
           coalesce(sum(c.outstanding), 0)                      AS outstanding_balance,
           coalesce(sum(c.active_loans), 0)                     AS active_loans,
           count(*) FILTER (WHERE c.active_loans > 0)           AS active_customers,
           coalesce(sum(c.par_30_amount), 0)                    AS par_30_amount,
           coalesce(sum(c.par_90_amount), 0)                    AS par_90_amount,
           coalesce(sum(c.npl_amount), 0)                       AS npl_amount,
           sum(c.apr_weighted)                                  AS apr_weighted,
           sum(c.apr_weight)                                    AS apr_weight
    FROM periods AS p
    LEFT JOIN customer_book AS c ON c.as_of_date = p.period_end
    GROUP BY p.month
),
daily AS (
    -- Loans disbursed, cash, revenue and installments due per day of the window; each month
    -- sums its days through its period end.
    SELECT l.disbursement_date AS day, count(*) AS loans, sum(l.principal) AS disbursed,
           0 AS cash, 0 AS revenue, 0 AS due
    FROM {loans} AS l
    WHERE l.disbursement_date >= (%(period_months)s::date[])[1]
      AND l.disbursement_date <= %(as_of)s
    GROUP BY l.disbursement_date
    UNION ALL
    SELECT x.paid_on, 0, 0,
           sum(x.principal_paid + x.interest_paid + x.fee_paid + x.other_paid + x.tax_paid
               + x.fee_tax_paid - x.rebates),
           sum(x.interest_paid + x.fee_paid + x.other_paid - x.rebates), 0
    FROM {payments} AS x
    WHERE x.paid_on >= (%(period_months)s::date[])[1] AND x.paid_on <= %(as_of)s
    GROUP BY x.paid_on
    UNION ALL
    SELECT s.due_date, 0, 0, 0, 0,
           sum(s.principal_due + s.interest_due + s.fee_due + s.other_due + s.tax_due)
    FROM {payment_schedule} AS s
    WHERE s.due_date >= (%(period_months)s::date[])[1] AND s.due_date <= %(as_of)s
    GROUP BY s.due_date
),
flows AS (
    SELECT p.month,
           coalesce(sum(d.loans), 0)     AS loans_disbursed,
           coalesce(sum(d.disbursed), 0) AS disbursed_amount,
           coalesce(sum(d.cash), 0)      AS collections,
           coalesce(sum(d.revenue), 0)   AS revenue,
           coalesce(sum(d.due), 0)       AS due
    FROM periods AS p
    LEFT JOIN daily AS d ON date_trunc('month', d.day)::date = p.month AND d.day <= p.period_end
    GROUP BY p.month
),
customers AS (
    SELECT date_trunc('month', l.disbursement_date)::date AS month,
           count(DISTINCT l.customer_id) AS customers_disbursed
    FROM {loans} AS l
    WHERE l.disbursement_date >= (%(period_months)s::date[])[1]
      AND l.disbursement_date <= %(as_of)s
    GROUP BY 1
)
SELECT %(as_of)s::date                                             AS as_of_date,
       p.month                                                     AS month,
       p.period_end                                                AS period_end,
       (p.period_end = (p.month + interval '1 month - 1 day')::date) AS is_month_end,
       f.loans_disbursed::bigint                                   AS loans_disbursed,
       f.disbursed_amount::numeric(18,2)                           AS disbursed_amount,
       coalesce(u.customers_disbursed, 0)::bigint                               AS customers_disbursed,
       f.collections::numeric(18,2)                                AS collections,
       f.revenue::numeric(18,2)                                    AS revenue,
       f.due::numeric(18,2)                           AS scheduled_due,
       (f.collections / nullif(f.due, 0))::numeric(18,10)                  AS collection_rate,
       b.outstanding_balance::numeric(18,2)                        AS outstanding_balance,
       b.active_loans::bigint                                      AS active_loans,
       b.active_customers::bigint                                  AS active_customers,
       b.par_30_amount::numeric(18,2)                              AS par_30_amount,
       (b.par_30_amount / nullif(b.outstanding_balance, 0))::numeric(18,10) AS par_30,
       b.par_90_amount::numeric(18,2)                              AS par_90_amount,
       (b.par_90_amount / nullif(b.outstanding_balance, 0))::numeric(18,10) AS par_90,
       b.npl_amount::numeric(18,2)                                 AS npl_amount,
       (b.npl_amount / nullif(b.outstanding_balance, 0))::numeric(18,10)   AS npl_ratio,
       o.written_off_amount::numeric(18,2)                         AS written_off_amount,
       o.recoveries::numeric(18,2)                                 AS recoveries,
       (b.apr_weighted / nullif(b.apr_weight, 0))::numeric(18,10)          AS weighted_apr
FROM periods AS p
JOIN book AS b USING (month)
JOIN flows AS f USING (month)
JOIN losses AS o USING (month)
LEFT JOIN customers AS u USING (month)
ORDER BY p.month
