-- analytics/customer_types: per calendar month of the window, the customers of each type.
-- Customers who took a loan in the month are new (no earlier loan), reactivated (their previous
-- loan was disbursed more than reactivation_days before their first loan of the month) or
-- recurrent (otherwise). Recovered customers are those who, at the month's period end, were once
-- more than recovered_from_days past due and now owe no loan more than recovered_to_days past
-- due, and who were not so at the previous period end: the month of their recovery. The WITH
-- list starts with the arrears history up to D and the loan states at the roll dates.
WITH {states},
periods AS (
    SELECT p.month, p.period_end, (%(roll_dates)s::date[])[p.k] AS previous_end
    FROM unnest(%(period_months)s::date[], %(period_ends)s::date[]) WITH ORDINALITY
        AS p (month, period_end, k)
),
types AS (
    SELECT * FROM (VALUES (1, 'new'), (2, 'recurrent'), (3, 'reactivated'), (4, 'recovered'))
        AS t (position, customer_type)
),
customer_months AS (
    -- Each customer's loans per calendar month, and the last disbursement of the latest
    -- earlier month with one: the loan before the customer's first loan of a month.
    SELECT m.*,
           lag(m.last_disbursement) OVER (PARTITION BY m.customer_id ORDER BY m.month)
               AS previous_disbursement
    FROM (
        SELECT l.customer_id, date_trunc('month', l.disbursement_date)::date AS month,
               count(*) AS loans, sum(l.principal) AS amount,
               min(l.disbursement_date) AS first_disbursement,
               max(l.disbursement_date) AS last_disbursement
        FROM {loans} AS l
        WHERE l.disbursement_date <= %(as_of)s
        GROUP BY 1, 2
    ) AS m
),
in_period AS (
    SELECT p.month, c.customer_id, c.loans, c.amount, c.first_disbursement,
           c.previous_disbursement
    FROM periods AS p
    JOIN customer_months AS c ON c.month = p.month
),
worst AS (
    -- customers owing no more than the tolerance at a date have no row: nothing of theirs is
    -- past due
    SELECT s.as_of_date, s.customer_id, max(s.days_past_due) AS days_past_due,
           sum(s.outstanding) AS outstanding
    FROM states AS s
    GROUP BY s.as_of_date, s.customer_id
),
over_days AS (
    -- the first day each customer had a loan more than recovered_from_days past due: the
    -- arrears history's entries at level recovered_from_days + 1 (any day up to D)
    SELECT l.customer_id, min(e.entered_on) AS first_over_on
    FROM arrears_entries AS e
    JOIN {loans} AS l ON l.loan_id = e.loan_id
    WHERE e.level = %(recovered_level)s::integer
    GROUP BY l.customer_id
),
recovered AS (
    SELECT p.month, o.customer_id
    FROM periods AS p
    JOIN over_days AS o ON o.first_over_on <= p.period_end
    LEFT JOIN worst AS n ON n.as_of_date = p.period_end AND n.customer_id = o.customer_id
    LEFT JOIN worst AS b ON b.as_of_date = p.previous_end AND b.customer_id = o.customer_id
    WHERE coalesce(n.days_past_due, 0) <= %(recovered_to_days)s
      AND NOT (o.first_over_on <= p.previous_end
               AND coalesce(b.days_past_due, 0) <= %(recovered_to_days)s)
),
classified AS (
    SELECT i.month, i.customer_id, i.loans, i.amount,
           CASE WHEN i.previous_disbursement IS NULL THEN 'new'
                WHEN i.first_disbursement - i.previous_disbursement > %(reactivation_days)s
                    THEN 'reactivated'
                ELSE 'recurrent' END AS customer_type
    FROM in_period AS i
    UNION ALL
    SELECT r.month, r.customer_id, coalesce(i.loans, 0), coalesce(i.amount, 0), 'recovered'
    FROM recovered AS r
    LEFT JOIN in_period AS i ON i.month = r.month AND i.customer_id = r.customer_id
)
SELECT %(as_of)s::date                             AS as_of_date,
       p.month                                     AS month,
       p.period_end                                AS period_end,
       t.customer_type::text                       AS customer_type,
       count(c.customer_id)::bigint                AS customers,
       coalesce(sum(c.loans), 0)::bigint           AS loans_disbursed,
       coalesce(sum(c.amount), 0)::numeric(18,2)   AS disbursed_amount,
       coalesce(sum(w.outstanding), 0)::numeric(18,2) AS outstanding
FROM periods AS p
CROSS JOIN types AS t
LEFT JOIN classified AS c ON c.month = p.month AND c.customer_type = t.customer_type
LEFT JOIN worst AS w ON w.as_of_date = p.period_end AND w.customer_id = c.customer_id
GROUP BY p.month, p.period_end, t.position, t.customer_type
ORDER BY p.month, t.position
