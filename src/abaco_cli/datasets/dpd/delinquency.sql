-- Loan-level delinquency as of %(as_of)s (end of that day), as docs/domain.md defines it
-- (definitions version 2). Reused by the loans table, the aging summary and the other datasets.
-- The history (datasets/states/history.sql, up to D) holds the loans in scope with their
-- payments and installments, and the write-offs (once, for good, at a frozen gross write-off).
WITH {history},
measured AS (
    SELECT l.loan_id, l.customer_id, l.company, l.product_type, l.disbursement_date,
           l.maturity_date, l.principal,
           coalesce(l.paid_total, 0) AS principal_paid,
           greatest(l.principal - coalesce(l.paid_total, 0), 0) AS gross_outstanding,
           greatest(l.due_total - coalesce(l.paid_total, 0), 0) AS past_due_amount,
           l.last_paid_on AS last_payment_date, l.last_due_date,
           w.write_off_date, w.gross_write_off
    FROM h_loans AS l
    LEFT JOIN write_offs AS w ON w.loan_id = l.loan_id
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
           coalesce(%(as_of)s::date - a.first_arrears_date, 0) AS days_past_due,
           a.write_off_date IS NOT NULL AS is_written_off
    FROM (SELECT * FROM arrears OFFSET 0) AS a  -- OFFSET 0: evaluate the arrears walk once per loan
),
recovered AS (
    -- cash (and its principal) received from the write-off date through D
    SELECT w.loan_id,
           sum(p.principal_paid + p.interest_paid + p.fee_paid + p.other_paid + p.tax_paid
               + p.fee_tax_paid - p.rebates) AS recoveries,
           sum(p.principal_paid)              AS principal_recovered
    FROM write_offs AS w
    JOIN {payments} AS p
      ON p.loan_id = w.loan_id AND p.paid_on >= w.write_off_date AND p.paid_on <= %(as_of)s
    GROUP BY w.loan_id
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
       f.last_due_date                                   AS last_due_date,
       f.write_off_date                                  AS write_off_date,
       coalesce(f.gross_write_off, 0)::numeric(18,2)     AS gross_write_off,
       coalesce(r.recoveries, 0)::numeric(18,2)          AS recoveries,
       coalesce(r.principal_recovered, 0)::numeric(18,2) AS principal_recovered
FROM (
    -- Buckets are contiguous from 0 days: the lower bounds after the first one are the
    -- thresholds, and width_bucket gives the bucket's stable value (0, 1, 2, ...).
    SELECT ag.*, width_bucket(ag.days_past_due, %(bucket_thresholds)s::integer[])::integer
               AS dpd_bucket_value
    FROM aged AS ag
) AS f
LEFT JOIN recovered AS r ON r.loan_id = f.loan_id
