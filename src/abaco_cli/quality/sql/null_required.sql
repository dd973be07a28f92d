-- null_required (error): NULL in a column the source contract requires: every key column and
-- every column the contract declares NOT NULL. The source's own schema may allow NULL there;
-- the figures do not (a NULL principal would export as a loan worth nothing).
SELECT 'null_required' AS check_name,
       'loans' AS source, c.column_name, jsonb_build_object('loan_id', l.loan_id) AS key,
       NULL::text AS detail, NULL::numeric AS amount
FROM {loans} AS l
CROSS JOIN LATERAL (VALUES
    ('loan_id', l.loan_id IS NULL),
    ('customer_id', l.customer_id IS NULL),
    ('product_type', l.product_type IS NULL),
    ('currency', l.currency IS NULL),
    ('disbursement_date', l.disbursement_date IS NULL),
    ('principal', l.principal IS NULL)
) AS c (column_name, missing)
WHERE c.missing
  AND (l.loan_id IS NULL OR l.customer_id IS NULL OR l.product_type IS NULL
       OR l.currency IS NULL OR l.disbursement_date IS NULL OR l.principal IS NULL)
UNION ALL
SELECT 'null_required', 'payment_schedule', c.column_name,
       jsonb_build_object('loan_id', s.loan_id, 'installment_no', s.installment_no), NULL, NULL
FROM {payment_schedule} AS s
CROSS JOIN LATERAL (VALUES
    ('loan_id', s.loan_id IS NULL),
    ('installment_no', s.installment_no IS NULL),
    ('due_date', s.due_date IS NULL),
    ('principal_due', s.principal_due IS NULL),
    ('interest_due', s.interest_due IS NULL),
    ('fee_due', s.fee_due IS NULL),
    ('other_due', s.other_due IS NULL),
    ('tax_due', s.tax_due IS NULL)
) AS c (column_name, missing)
WHERE c.missing
  AND (s.loan_id IS NULL OR s.installment_no IS NULL OR s.due_date IS NULL
       OR s.principal_due IS NULL OR s.interest_due IS NULL OR s.fee_due IS NULL
       OR s.other_due IS NULL OR s.tax_due IS NULL)
UNION ALL
SELECT 'null_required', 'payments',
       c.column_name, jsonb_build_object('payment_id', p.payment_id), NULL, NULL
FROM {payments} AS p
CROSS JOIN LATERAL (VALUES
    ('payment_id', p.payment_id IS NULL),
    ('loan_id', p.loan_id IS NULL),
    ('paid_on', p.paid_on IS NULL),
    ('principal_paid', p.principal_paid IS NULL),
    ('interest_paid', p.interest_paid IS NULL),
    ('fee_paid', p.fee_paid IS NULL),
    ('other_paid', p.other_paid IS NULL),
    ('tax_paid', p.tax_paid IS NULL),
    ('fee_tax_paid', p.fee_tax_paid IS NULL),
    ('rebates', p.rebates IS NULL)
) AS c (column_name, missing)
WHERE c.missing
  AND (p.payment_id IS NULL OR p.loan_id IS NULL OR p.paid_on IS NULL
       OR p.principal_paid IS NULL OR p.interest_paid IS NULL OR p.fee_paid IS NULL
       OR p.other_paid IS NULL OR p.tax_paid IS NULL OR p.fee_tax_paid IS NULL
       OR p.rebates IS NULL)
UNION ALL
SELECT 'null_required', 'customers',
       'customer_id', jsonb_build_object('customer_id', NULL), NULL, NULL
FROM {customers}
WHERE customer_id IS NULL
UNION ALL
SELECT 'null_required', 'rate_card',
       c.column_name, jsonb_build_object('rate_card_id', r.rate_card_id), NULL, NULL
FROM {rate_card} AS r
CROSS JOIN LATERAL (VALUES
    ('rate_card_id', r.rate_card_id IS NULL),
    ('effective_from', r.effective_from IS NULL)
) AS c (column_name, missing)
WHERE c.missing AND (r.rate_card_id IS NULL OR r.effective_from IS NULL)
