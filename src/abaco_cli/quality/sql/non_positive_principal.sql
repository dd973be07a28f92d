-- non_positive_principal (error): a loan whose principal is zero or negative. A principal of
-- -5000 exports as outstanding 0.00 and silently shrinks every balance-weighted figure.
SELECT 'non_positive_principal' AS check_name,
       'loans' AS source, 'principal' AS column_name, jsonb_build_object('loan_id', loan_id) AS key,
       principal::text AS detail, principal::numeric AS amount
FROM {loans}
WHERE principal <= 0
