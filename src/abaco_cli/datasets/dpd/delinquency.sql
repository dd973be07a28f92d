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
cumulative_due AS (
    SELECT s.loan_id, s.due_date,
           sum(s.principal_due) OVER (
               PARTITION BY s.loan_id ORDER BY s.due_date, s.installment_no
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
           ) AS cumulative_principal_due
    FROM {payment_schedule} AS s
    WHERE s.due_date < %(as_of)s
),
oldest_unpaid AS (
    SELECT c.loan_id, min(c.due_date) AS due_date
    FROM cumulative_due AS c
    LEFT JOIN paid AS p ON p.loan_id = c.loan_id
    WHERE c.cumulative_principal_due > coalesce(p.principal_paid, 0) + %(tolerance)s
    GROUP BY c.loan_id
),
measured AS (
    SELECT l.loan_id, l.customer_id, l.company, l.product_type, l.disbursement_date,
           l.maturity_date, l.principal, l.written_off_date,
           coalesce(p.principal_paid, 0) AS principal_paid,
           greatest(l.principal - coalesce(p.principal_paid, 0), 0) AS gross_outstanding,
           greatest(coalesce(s.principal_due, 0) - coalesce(p.principal_paid, 0), 0)
               AS past_due_amount,
           o.due_date AS oldest_unpaid_due_date,
           p.last_payment_date, s.last_due_date
    FROM {loans} AS l
    LEFT JOIN paid AS p ON p.loan_id = l.loan_id
    LEFT JOIN schedule_to_date AS s ON s.loan_id = l.loan_id
    LEFT JOIN oldest_unpaid AS o ON o.loan_id = l.loan_id
    WHERE l.disbursement_date <= %(as_of)s
),
aged AS (
    SELECT m.*,
           CASE WHEN m.past_due_amount > %(tolerance)s THEN m.oldest_unpaid_due_date END
               AS first_arrears_date,
           CASE WHEN m.past_due_amount > %(tolerance)s
                THEN (%(as_of)s::date - m.oldest_unpaid_due_date) ELSE 0 END AS days_past_due
    FROM measured AS m
),
flagged AS (
    SELECT a.*,
           (a.days_past_due > %(write_off_after_days)s
            OR (a.written_off_date IS NOT NULL AND a.written_off_date <= %(as_of)s))
               AS is_written_off
    FROM aged AS a
),
buckets AS (
    SELECT * FROM unnest(
        %(bucket_values)s::integer[], %(bucket_labels)s::text[],
        %(bucket_min_days)s::integer[], %(bucket_max_days)s::integer[]
    ) AS b (dpd_bucket_value, dpd_bucket, min_days, max_days)
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
       b.dpd_bucket::text                                AS dpd_bucket,
       b.dpd_bucket_value::integer                       AS dpd_bucket_value,
       (f.is_written_off OR f.days_past_due >= %(default_threshold_days)s) AS is_default,
       f.is_written_off                                  AS is_written_off,
       (CASE WHEN f.is_written_off THEN f.gross_outstanding ELSE 0 END)::numeric(18,2)
                                                         AS written_off_balance,
       f.last_payment_date                               AS last_payment_date,
       f.last_due_date                                   AS last_due_date
FROM flagged AS f
JOIN buckets AS b
  ON f.days_past_due >= b.min_days
 AND (b.max_days IS NULL OR f.days_past_due <= b.max_days)
