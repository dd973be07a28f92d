-- non_finite_number (error): NaN, Infinity or -Infinity in a numeric column of the contract.
-- numeric(18,2) accepts 'NaN' (not Infinity); a rate declared as plain numeric accepts all three.
-- No export can hold them exactly, and every figure derived from one (outstanding, PAR, ...)
-- would be one too: the check names the source column and the row, not the derived figure.
-- (The second condition of each part only lets the scan skip rows fast: NaN sorts above
-- Infinity, so a value is finite exactly when it lies strictly between -Infinity and Infinity.)
SELECT 'non_finite_number' AS check_name,
       'loans' AS source, c.column_name, jsonb_build_object('loan_id', l.loan_id) AS key,
       c.value::text AS detail, NULL::numeric AS amount
FROM {loans} AS l
CROSS JOIN LATERAL (VALUES
    ('principal', l.principal::numeric),
    ('interest_rate_apr', l.interest_rate_apr::numeric),
    ('origination_fee', l.origination_fee::numeric),
    ('origination_fee_taxes', l.origination_fee_taxes::numeric)
) AS c (column_name, value)
WHERE c.value IN ('NaN', 'Infinity', '-Infinity')
  AND NOT (l.principal > '-Infinity' AND l.principal < 'Infinity'
           AND l.interest_rate_apr > '-Infinity' AND l.interest_rate_apr < 'Infinity'
           AND l.origination_fee > '-Infinity' AND l.origination_fee < 'Infinity'
           AND l.origination_fee_taxes > '-Infinity' AND l.origination_fee_taxes < 'Infinity')
UNION ALL
SELECT 'non_finite_number', 'payment_schedule', c.column_name,
       jsonb_build_object('loan_id', s.loan_id, 'installment_no', s.installment_no),
       c.value::text, NULL
FROM {payment_schedule} AS s
CROSS JOIN LATERAL (VALUES
    ('principal_due', s.principal_due::numeric),
    ('interest_due', s.interest_due::numeric),
    ('fee_due', s.fee_due::numeric),
    ('other_due', s.other_due::numeric),
    ('tax_due', s.tax_due::numeric)
) AS c (column_name, value)
WHERE c.value IN ('NaN', 'Infinity', '-Infinity')
  AND NOT (s.principal_due > '-Infinity' AND s.principal_due < 'Infinity'
           AND s.interest_due > '-Infinity' AND s.interest_due < 'Infinity'
           AND s.fee_due > '-Infinity' AND s.fee_due < 'Infinity'
           AND s.other_due > '-Infinity' AND s.other_due < 'Infinity'
           AND s.tax_due > '-Infinity' AND s.tax_due < 'Infinity')
UNION ALL
SELECT 'non_finite_number', 'payments',
       c.column_name, jsonb_build_object('payment_id', p.payment_id),
       c.value::text, NULL
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
WHERE c.value IN ('NaN', 'Infinity', '-Infinity')
  AND NOT (p.principal_paid > '-Infinity' AND p.principal_paid < 'Infinity'
           AND p.interest_paid > '-Infinity' AND p.interest_paid < 'Infinity'
           AND p.fee_paid > '-Infinity' AND p.fee_paid < 'Infinity'
           AND p.other_paid > '-Infinity' AND p.other_paid < 'Infinity'
           AND p.tax_paid > '-Infinity' AND p.tax_paid < 'Infinity'
           AND p.fee_tax_paid > '-Infinity' AND p.fee_tax_paid < 'Infinity'
           AND p.rebates > '-Infinity' AND p.rebates < 'Infinity')
UNION ALL
SELECT 'non_finite_number', 'rate_card',
       c.column_name, jsonb_build_object('rate_card_id', r.rate_card_id),
       c.value::text, NULL
FROM {rate_card} AS r
CROSS JOIN LATERAL (VALUES
    ('ticket_min', r.ticket_min::numeric),
    ('ticket_max', r.ticket_max::numeric),
    ('apr', r.apr::numeric),
    ('fee_rate', r.fee_rate::numeric)
) AS c (column_name, value)
WHERE c.value IN ('NaN', 'Infinity', '-Infinity')
