-- negative_amount (error): a negative amount in an installment (principal, interest, fee,
-- other or tax due) or in a payment (each paid component, and rebates). Reversals belong in
-- the source as corrections of the original row, not as negative rows.
SELECT 'negative_amount' AS check_name,
       'payment_schedule' AS source, c.column_name,
       jsonb_build_object('loan_id', s.loan_id, 'installment_no', s.installment_no) AS key,
       c.value::text AS detail, c.value AS amount
FROM {payment_schedule} AS s
CROSS JOIN LATERAL (VALUES
    ('principal_due', s.principal_due::numeric),
    ('interest_due', s.interest_due::numeric),
    ('fee_due', s.fee_due::numeric),
    ('other_due', s.other_due::numeric),
    ('tax_due', s.tax_due::numeric)
) AS c (column_name, value)
WHERE c.value < 0
  AND (s.principal_due < 0 OR s.interest_due < 0 OR s.fee_due < 0 OR s.other_due < 0
       OR s.tax_due < 0)
UNION ALL
SELECT 'negative_amount', 'payments',
       c.column_name, jsonb_build_object('payment_id', p.payment_id),
       c.value::text, c.value
FROM {payments} AS p
CROSS JOIN LATERAL (VALUES
    ('principal_paid', p.principal_paid::numeric),
    ('interest_paid', p.interest_paid::numeric),
    ('fee_paid', p.fee_paid::numeric),
    ('other_paid', p.other_paid::numeric),
    ('tax_paid', p.tax_paid::numeric),
    ('fee_tax_paid', p.fee_tax_paid::numeric),
    ('rebates', p.rebates::numeric)
) AS c (column_name, value)
WHERE c.value < 0
  AND (p.principal_paid < 0 OR p.interest_paid < 0 OR p.fee_paid < 0 OR p.other_paid < 0
       OR p.tax_paid < 0 OR p.fee_tax_paid < 0 OR p.rebates < 0)
