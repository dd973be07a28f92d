-- Loan-level delinquency as of %(as_of)s (end of that day), exactly as DOMAIN.md defines it.
-- Reused by the loans table, the aging summary and the other datasets.
WITH paid AS (
    SELECT p.loan_id,
           sum(p.principal_paid) AS principal_paid,
           max(p.paid_on)        AS last_payment_date
    FROM {payments} AS p
    WHERE p.paid_on <= %(as_of)s
    GROUP BY p.loan_id
),
schedule_to_date AS (
    SELECT s.loan_id,
           coalesce(sum(s.principal_due) FILTER (WHERE s.due_date < %(as_of)s), 0) AS principal_due,
           max(s.due_date) FILTER (WHERE s.due_date <= %(as_of)s) AS last_due_date
    FROM {payment_schedule} AS s
    WHERE s.due_date <= %(as_of)s
    GROUP BY s.loan_id
),
measured AS (
    SELECT l.loan_id, l.customer_id, l.company, l.product_type, l.disbursement_date,
           l.maturity_date, l.principal, l.written_off_date,
           coalesce(p.principal_paid, 0) AS principal_paid,
           greatest(l.principal - coalesce(p.principal_paid, 0), 0) AS gross_outstanding,
           greatest(coalesce(s.principal_due, 0) - coalesce(p.principal_paid, 0), 0)
               AS past_due_amount,
           p.last_payment_date, s.last_due_date
    FROM {loans} AS l
    LEFT JOIN paid AS p ON p.loan_id = l.loan_id
    LEFT JOIN schedule_to_date AS s ON s.loan_id = l.loan_id
    WHERE l.disbursement_date <= %(as_of)s
),
arrears AS (
    -- Only loans in arrears walk their installments: in due_date order, the first one whose
    -- cumulative principal_due exceeds principal_paid + tolerance is the oldest unpaid one.
    SELECT m.*,
           CASE WHEN m.past_due_amount > %(tolerance)s THEN (
               SELECT min(c.due_date)
               FROM (
                   SELECT s.due_date,
                          sum(s.principal_due) OVER (
                              ORDER BY s.due_date, s.installment_no
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
                          ) AS cumulative_principal_due
                   FROM {payment_schedule} AS s
                   WHERE s.loan_id = m.loan_id AND s.due_date < %(as_of)s
               ) AS c
               WHERE c.cumulative_principal_due > m.principal_paid + %(tolerance)s
           ) END AS first_arrears_date
    FROM measured AS m
),
aged AS (
    SELECT a.*,
           coalesce(%(as_of)s::date - a.first_arrears_date, 0) AS days_past_due
    FROM (SELECT * FROM arrears OFFSET 0) AS a  -- OFFSET 0: evaluate the arrears walk once per loan
),
flagged AS (
    SELECT a.*,
           (a.days_past_due > %(write_off_after_days)s
            OR (a.written_off_date IS NOT NULL AND a.written_off_date <= %(as_of)s))
               AS is_written_off
    FROM aged AS a
)
SELECT %(as_of)s::date                                   AS as_of_date,
       f.loan_id::text                                   AS loan_id,
       f.customer_id::text                               AS customer_id,
       f.company::text                                   AS company,
       f.product_type::text                              AS product_type,
       f.disbursement_date                               AS disbursement_date,
       f.maturity_date                                   AS maturity_date,
       f.principal::numeric(18,2)                        AS principal,
       f.principal_paid::numeric(18,2)                   AS principal_paid,
       (CASE WHEN f.is_written_off THEN 0 ELSE f.gross_outstanding END)::numeric(18,2)
                                                         AS outstanding,
       f.past_due_amount::numeric(18,2)                  AS past_due_amount,
       f.first_arrears_date                              AS first_arrears_date,
       f.days_past_due::integer                          AS days_past_due,
       (%(bucket_labels)s::text[])[f.dpd_bucket_value + 1] AS dpd_bucket,
       f.dpd_bucket_value                                AS dpd_bucket_value,
       (f.is_written_off OR f.days_past_due >= %(default_threshold_days)s) AS is_default,
       f.is_written_off                                  AS is_written_off,
       (CASE WHEN f.is_written_off THEN f.gross_outstanding ELSE 0 END)::numeric(18,2)
                                                         AS written_off_balance,
       f.last_payment_date                               AS last_payment_date,
       f.last_due_date                                   AS last_due_date
FROM (
    -- Buckets are contiguous from 0 days: the lower bounds after the first one are the
    -- thresholds, and width_bucket gives the bucket's stable value (0, 1, 2, ...).
    SELECT fl.*, width_bucket(fl.days_past_due, %(bucket_thresholds)s::integer[])::integer
               AS dpd_bucket_value
    FROM flagged AS fl
) AS f
