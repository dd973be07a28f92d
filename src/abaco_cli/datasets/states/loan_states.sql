-- Loan states at many dates: the rules of dpd/delinquency.sql evaluated at every date of
-- the dates parameter (a sorted array of distinct dates, e.g. month-ends) in one pass.
--
-- Columns as in dpd/loans (without company, product_type, maturity and last due dates, gross
-- write-off and recoveries), plus the loan attributes the datasets weigh or date by. Only the
-- loans that owe more than the tolerance at a date get a row for it (principal - principal_paid
-- > tolerance): a loan not disbursed yet, repaid or settled (its leftover cents) is not active
-- and has no written-off balance worth a row, so it adds nothing to any balance, PAR, count of
-- active loans or roll rate. Every row equals the row that delinquency.sql gives for the same
-- loan and date (tests/test_loan_states.py compares them loan by loan). delinquency.sql stays
-- the statement of the rules for one date; this query exists because running it once per date
-- costs a full pass over the book per date.
--
-- It reads h_loans and write_offs of the arrears history (states/history.sql) up to the last
-- of the dates, which the host query puts in its WITH list before it.
--
-- Most loans are simple between two dates: before a loan's first payment it has paid nothing,
-- from its last payment on it has paid everything, and with one installment that installment
-- is the oldest unpaid one whenever anything is past due. Only the dates between the first and
-- last payment of a loan paid in several parts, and the dates after the first due date of a
-- loan with several installments, need the payments and installments themselves.
WITH pairs AS (
    -- The dates at which a loan may still owe principal: from the first date on or after its
    -- disbursement; up to the last date before its last payment when its payments leave no
    -- more than the tolerance (a later date sees it settled), else up to the last date.
    SELECT k, ({dates}::date[])[k] AS as_of_date, s.*
    FROM (
        SELECT l.loan_id, l.customer_id, l.principal, w.write_off_date, l.disbursement_date,
               l.interest_rate_apr, l.term_days, l.origination_fee, l.origination_fee_taxes,
               l.paid_total, l.first_paid_on, l.last_paid_on, l.installments, l.due_total,
               l.first_due_date,
               width_bucket(l.disbursement_date - 1, {dates}::date[]) + 1 AS first_k,
               CASE WHEN l.principal - coalesce(l.paid_total, 0) > %(tolerance)s
                    THEN cardinality({dates}::date[])
                    ELSE width_bucket(l.last_paid_on - 1, {dates}::date[])
               END AS last_k
        FROM h_loans AS l
        LEFT JOIN write_offs AS w ON w.loan_id = l.loan_id
    ) AS s
    CROSS JOIN LATERAL generate_series(s.first_k, s.last_k) AS k
    WHERE s.first_k <= s.last_k
),
owing AS (
    -- Payments dated after a date do not exist yet for it. Before a loan's first payment it has
    -- paid nothing and from its last one on it has paid them all: only the dates in between
    -- read the payments themselves. (OFFSET 0 keeps each subquery to one evaluation per row.)
    SELECT x.* FROM (
        SELECT r.*,
               CASE WHEN r.first_paid_on IS NULL OR r.as_of_date < r.first_paid_on THEN 0
                    WHEN r.as_of_date >= r.last_paid_on THEN r.paid_total
                    ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                          WHERE p.loan_id = r.loan_id AND p.paid_on <= r.as_of_date)
               END AS principal_paid,
               CASE WHEN r.first_paid_on IS NULL OR r.as_of_date < r.first_paid_on THEN NULL
                    WHEN r.as_of_date >= r.last_paid_on THEN r.last_paid_on
                    ELSE (SELECT max(p.paid_on) FROM {payments} AS p
                          WHERE p.loan_id = r.loan_id AND p.paid_on <= r.as_of_date)
               END AS last_payment_date
        FROM pairs AS r
        OFFSET 0
    ) AS x
    WHERE x.principal - x.principal_paid > %(tolerance)s
),
walked AS (
    -- Principal due before the date (an installment due on the date is not late yet) and, in
    -- due_date order, the first installment whose cumulative principal_due exceeds
    -- principal_paid + tolerance: the oldest unpaid one. Only loans with several installments,
    -- after their first due date, read their installments. (OFFSET 0 keeps each subquery to one
    -- evaluation per row.)
    SELECT o.*,
           CASE WHEN o.first_due_date IS NULL OR o.as_of_date <= o.first_due_date THEN 0
                WHEN o.installments = 1 THEN o.due_total
                ELSE (SELECT sum(s.principal_due) FROM {payment_schedule} AS s
                      WHERE s.loan_id = o.loan_id AND s.due_date < o.as_of_date)
           END AS principal_due,
           CASE WHEN o.first_due_date IS NULL OR o.as_of_date <= o.first_due_date THEN NULL
                WHEN o.installments = 1 THEN o.first_due_date
                ELSE (SELECT min(c.due_date) FROM (
                          SELECT s.due_date,
                                 sum(s.principal_due) OVER (
                                     ORDER BY s.due_date, s.installment_no
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
                                 ) AS cumulative_principal_due
                          FROM {payment_schedule} AS s
                          WHERE s.loan_id = o.loan_id AND s.due_date < o.as_of_date
                      ) AS c
                      WHERE c.cumulative_principal_due > o.principal_paid + %(tolerance)s)
           END AS oldest_unpaid_due_date
    FROM owing AS o
    OFFSET 0
),
aged AS (
    SELECT w.*,
           greatest(w.principal_due - w.principal_paid, 0) AS past_due_amount,
           CASE WHEN w.principal_due - w.principal_paid > %(tolerance)s
                THEN w.oldest_unpaid_due_date END AS first_arrears_date
    FROM walked AS w
),
flagged AS (
    -- written off from the write-off date on, for good (version 2)
    SELECT a.*,
           coalesce(a.as_of_date - a.first_arrears_date, 0) AS days_past_due,
           coalesce(a.write_off_date <= a.as_of_date, false) AS is_written_off
    FROM aged AS a
)
SELECT f.as_of_date                                      AS as_of_date,
       f.loan_id::text                                   AS loan_id,
       f.customer_id::text                               AS customer_id,
       f.principal::numeric(18,2)                        AS principal,
       f.principal_paid::numeric(18,2)                   AS principal_paid,
       (CASE WHEN f.is_written_off THEN 0 ELSE f.principal - f.principal_paid END)::numeric(18,2)
                                                         AS outstanding,
       f.past_due_amount::numeric(18,2)                  AS past_due_amount,
       f.first_arrears_date                              AS first_arrears_date,
       f.days_past_due::integer                          AS days_past_due,
       width_bucket(f.days_past_due, %(bucket_thresholds)s::integer[])::integer
                                                         AS dpd_bucket_value,
       (f.is_written_off OR f.days_past_due >= %(default_threshold_days)s) AS is_default,
       f.is_written_off                                  AS is_written_off,
       (CASE WHEN f.is_written_off THEN f.principal - f.principal_paid ELSE 0 END)::numeric(18,2)
                                                         AS written_off_balance,
       f.last_payment_date                               AS last_payment_date,
       -- loan attributes the datasets weigh or date by
       f.disbursement_date                               AS disbursement_date,
       CASE WHEN f.is_written_off THEN f.write_off_date END AS write_off_date,
       f.interest_rate_apr                               AS interest_rate_apr,
       f.term_days                                       AS term_days,
       f.origination_fee                                 AS origination_fee,
       f.origination_fee_taxes                           AS origination_fee_taxes
FROM flagged AS f
