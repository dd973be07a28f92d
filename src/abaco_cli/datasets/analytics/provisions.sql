-- analytics/provisions: the IFRS 9 provision matrix (simplified approach). Every active loan
-- is in the stage of its customer's days past due (the most of the customer's active loans):
-- stage 1 below stage_2_from_days, stage 2 below stage_3_from_days, stage 3 from there on.
-- A stage's historical loss rate looks at the month-ends M from 24 to 12 months before D (the
-- provision_month_ends): of the balance in the stage at M, the net loss (the gross write-offs
-- of its loans within the 12 months after M, less the recoveries on them up to D), divided by
-- that balance, pooled over the month-ends (sum of net losses / sum of balances). Expected
-- credit loss = the stage's exposure at D x its loss rate. Without a balance in the stage at
-- those month-ends the loss rate is null and loss_rate_note says why, never 0.
-- The WITH list starts with the arrears history up to D (write-offs) and the loan states at
-- the provision_dates (the month-ends and D).
WITH {states},
stages AS (
    SELECT * FROM (VALUES
        (1, 0, %(stage_2_from_days)s::integer - 1),
        (2, %(stage_2_from_days)s::integer, %(stage_3_from_days)s::integer - 1),
        (3, %(stage_3_from_days)s::integer, NULL::integer)
    ) AS t (stage, min_days, max_days)
),
customer_days AS (
    SELECT s.as_of_date, s.customer_id, max(s.days_past_due) AS days_past_due
    FROM states AS s
    WHERE NOT s.is_written_off
    GROUP BY s.as_of_date, s.customer_id
),
staged AS (
    SELECT s.as_of_date, s.loan_id, s.customer_id, s.outstanding,
           CASE WHEN c.days_past_due >= %(stage_3_from_days)s THEN 3
                WHEN c.days_past_due >= %(stage_2_from_days)s THEN 2
                ELSE 1 END AS stage
    FROM states AS s
    JOIN customer_days AS c ON c.as_of_date = s.as_of_date AND c.customer_id = s.customer_id
    WHERE NOT s.is_written_off
),
recovered AS (
    -- cash received on each written-off loan from its write-off date through D
    SELECT w.loan_id,
           sum(p.principal_paid + p.interest_paid + p.fee_paid + p.other_paid + p.tax_paid
               + p.fee_tax_paid - p.rebates) AS cash
    FROM write_offs AS w
    JOIN {payments} AS p
      ON p.loan_id = w.loan_id AND p.paid_on >= w.write_off_date AND p.paid_on <= %(as_of)s
    GROUP BY w.loan_id
),
history AS (
    -- per stage, over the month-ends of the lookback: the balance in the stage and its net loss
    SELECT g.stage,
           count(DISTINCT g.as_of_date) AS month_ends,
           sum(g.outstanding)           AS balance,
           coalesce(sum(w.gross_write_off - coalesce(r.cash, 0)) FILTER (
               WHERE w.write_off_date > g.as_of_date
                 AND w.write_off_date
                     <= (date_trunc('month', g.as_of_date) + interval '13 months - 1 day')::date
           ), 0) AS net_loss
    FROM staged AS g
    LEFT JOIN write_offs AS w ON w.loan_id = g.loan_id
    LEFT JOIN recovered AS r ON r.loan_id = g.loan_id
    WHERE g.as_of_date = ANY (%(provision_month_ends)s::date[])
    GROUP BY g.stage
),
today AS (
    SELECT g.stage, count(*) AS loans, count(DISTINCT g.customer_id) AS customers,
           sum(g.outstanding) AS exposure
    FROM staged AS g
    WHERE g.as_of_date = %(as_of)s
    GROUP BY g.stage
),
book AS (
    SELECT min(l.disbursement_date) AS starts_on FROM h_loans AS l
),
rated AS (
    SELECT t.stage, t.min_days, t.max_days,
           coalesce(d.loans, 0) AS loans, coalesce(d.customers, 0) AS customers,
           coalesce(d.exposure, 0) AS exposure,
           coalesce(h.month_ends, 0) AS month_ends, coalesce(h.balance, 0) AS balance,
           coalesce(h.net_loss, 0) AS net_loss,
           (h.net_loss / nullif(h.balance, 0))::numeric(18,10) AS loss_rate,
           b.starts_on,
           (%(provision_month_ends)s::date[])[1] AS history_from,
           (%(provision_month_ends)s::date[])[cardinality(%(provision_month_ends)s::date[])]
               AS history_to
    FROM stages AS t
    LEFT JOIN today AS d ON d.stage = t.stage
    LEFT JOIN history AS h ON h.stage = t.stage
    CROSS JOIN book AS b
)
SELECT %(as_of)s::date                                        AS as_of_date,
       r.stage::integer                                       AS stage,
       r.min_days::integer                                    AS min_days_past_due,
       r.max_days::integer                                    AS max_days_past_due,
       r.loans::bigint                                        AS loans,
       r.customers::bigint                                    AS customers,
       r.exposure::numeric(18,2)                              AS exposure,
       r.history_from                                         AS history_from,
       r.history_to                                           AS history_to,
       r.month_ends::integer                                  AS history_month_ends,
       r.balance::numeric(18,2)                               AS history_balance,
       r.net_loss::numeric(18,2)                              AS history_net_loss,
       r.loss_rate                                            AS loss_rate,
       (r.exposure * r.loss_rate)::numeric(18,2)              AS expected_loss,
       ((r.exposure * r.loss_rate)::numeric(18,2) / nullif(r.exposure, 0))::numeric(18,10)
                                                              AS coverage,
       (CASE WHEN r.history_to IS NULL
                 THEN 'history too short: no month-end 12 to 24 months before the as-of date'
             WHEN r.starts_on IS NULL OR r.starts_on > r.history_to
                 THEN 'history too short: the book starts on ' || coalesce(r.starts_on::text, '-')
                      || ', after ' || r.history_to
                      || ' (loss rates need the month-ends from ' || r.history_from || ' to '
                      || r.history_to || ' and the 12 months after each)'
             WHEN r.loss_rate IS NULL
                 THEN 'no balance in stage ' || r.stage || ' at the month-ends from '
                      || r.history_from || ' to ' || r.history_to
             WHEN r.starts_on > r.history_from
                 THEN 'partial history: the book starts on ' || r.starts_on || ', after '
                      || r.history_from
        END)::text                                            AS loss_rate_note
FROM rated AS r
ORDER BY r.stage
