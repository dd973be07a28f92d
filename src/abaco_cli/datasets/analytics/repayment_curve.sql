-- analytics/repayment_curve: per due month M of the window and k days after the due date (the
-- analytics.repayment_days): the principal due on installments due in M (on or before D) whose
-- due date + k is on or before D, and how much of it payments dated on or before the due date
-- + k covered. A loan's payments pay its installments oldest first (due date, then installment
-- number): an installment is covered by the principal paid by then beyond what its earlier
-- installments were due (due_before), up to its own principal due. By loans: the loans with
-- such an installment, and those whose installments of M were all covered (within the
-- tolerance). A row exists for every month and k with the month's first day + k on or before
-- D; is_complete says every installment of the month is observed (its last day + k <= D).
WITH months AS (
    SELECT p.month, (p.month + interval '1 month - 1 day')::date AS last_day
    FROM unnest(%(period_months)s::date[]) AS p (month)
),
offsets AS (
    SELECT k FROM unnest(%(repayment_days)s::integer[]) AS k
),
window_installments AS (
    SELECT s.loan_id, s.installment_no, s.due_date, s.principal_due,
           date_trunc('month', s.due_date)::date AS month
    FROM {payment_schedule} AS s
    JOIN {loans} AS l ON l.loan_id = s.loan_id AND l.disbursement_date <= %(as_of)s
    WHERE s.due_date >= (%(period_months)s::date[])[1] AND s.due_date <= %(as_of)s
),
earlier AS (
    -- principal due before the window on the loans with an installment in it
    SELECT s.loan_id, sum(s.principal_due) AS principal_due
    FROM {payment_schedule} AS s
    JOIN (SELECT DISTINCT w.loan_id FROM window_installments AS w) AS w ON w.loan_id = s.loan_id
    WHERE s.due_date < (%(period_months)s::date[])[1]
    GROUP BY s.loan_id
),
installments AS (
    -- with the principal due on the loan's earlier installments, and how many installments
    -- the loan has in the month
    SELECT w.*,
           coalesce(e.principal_due, 0)
           + coalesce(sum(w.principal_due) OVER (
                 PARTITION BY w.loan_id ORDER BY w.due_date, w.installment_no
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS due_before,
           count(*) OVER (PARTITION BY w.loan_id, w.month) AS in_month
    FROM window_installments AS w
    LEFT JOIN earlier AS e ON e.loan_id = w.loan_id
),
paid AS (
    SELECT p.loan_id, sum(p.principal_paid) AS paid_total, min(p.paid_on) AS first_paid_on,
           max(p.paid_on) AS last_paid_on
    FROM {payments} AS p
    WHERE p.paid_on <= %(as_of)s
    GROUP BY p.loan_id
    ORDER BY p.loan_id
),
covered AS (
    -- principal paid by the due date + k: nothing before the first payment, everything from
    -- the last one on, else the payments themselves
    SELECT i.month, o.k, i.loan_id, i.in_month, i.principal_due,
           least(greatest(
               CASE WHEN t.first_paid_on IS NULL OR i.due_date + o.k < t.first_paid_on THEN 0
                    WHEN i.due_date + o.k >= t.last_paid_on THEN t.paid_total
                    ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                          WHERE p.loan_id = i.loan_id AND p.paid_on <= i.due_date + o.k)
               END - i.due_before, 0), i.principal_due) AS repaid
    FROM installments AS i
    JOIN offsets AS o ON i.due_date + o.k <= %(as_of)s
    LEFT JOIN paid AS t ON t.loan_id = i.loan_id
),
totals AS (
    -- a loan with one installment in the month counts as that installment; the few loans
    -- with several are gathered by id (all, and those with an installment not covered)
    SELECT c.month, c.k,
           count(*) FILTER (WHERE c.in_month = 1) AS single_loans,
           count(*) FILTER (WHERE c.in_month = 1
                              AND c.repaid >= c.principal_due - %(tolerance)s) AS single_repaid,
           array_agg(c.loan_id) FILTER (WHERE c.in_month > 1) AS multi,
           array_agg(c.loan_id) FILTER (WHERE c.in_month > 1
                                          AND c.repaid < c.principal_due - %(tolerance)s)
               AS multi_short,
           sum(c.principal_due) AS principal_due, sum(c.repaid) AS principal_repaid
    FROM covered AS c
    GROUP BY c.month, c.k
),
cells AS (
    SELECT m.month, m.last_day, o.k,
           coalesce(t.single_loans, 0) + coalesce(x.multi, 0)               AS loans,
           coalesce(t.single_repaid, 0) + coalesce(x.multi, 0) - coalesce(x.short, 0)
                                                                            AS loans_repaid,
           coalesce(t.principal_due, 0)                                     AS principal_due,
           coalesce(t.principal_repaid, 0)                                  AS principal_repaid
    FROM months AS m
    CROSS JOIN offsets AS o
    LEFT JOIN totals AS t ON t.month = m.month AND t.k = o.k
    LEFT JOIN LATERAL (
        SELECT (SELECT count(DISTINCT a) FROM unnest(t.multi) AS a)       AS multi,
               (SELECT count(DISTINCT a) FROM unnest(t.multi_short) AS a) AS short
    ) AS x ON true
    WHERE m.month + o.k <= %(as_of)s
)
SELECT %(as_of)s::date                                                  AS as_of_date,
       c.month                                                          AS due_month,
       c.k::integer                                                     AS days_after_due,
       (c.last_day + c.k <= %(as_of)s)                                  AS is_complete,
       c.loans::bigint                                                  AS loans,
       c.principal_due::numeric(18,2)                                   AS principal_due,
       c.principal_repaid::numeric(18,2)                                AS principal_repaid,
       (c.principal_repaid / nullif(c.principal_due, 0))::numeric(18,10) AS repaid_share,
       c.loans_repaid::bigint                                           AS loans_repaid,
       (c.loans_repaid / nullif(c.loans, 0)::numeric)::numeric(18,10)   AS loans_repaid_share
FROM cells AS c
ORDER BY c.month, c.k
