-- duplicate_installment (warning): two or more installments of one loan with the same
-- installment_no. The contract's primary key prevents it; a source without it can hold them,
-- and every one of them counts as due (often the same installment loaded twice).
SELECT 'duplicate_installment' AS check_name,
       'payment_schedule' AS source, 'installment_no' AS column_name,
       jsonb_build_object('loan_id', loan_id, 'installment_no', installment_no) AS key,
       count(*) || ' rows' AS detail, NULL::numeric AS amount
FROM {payment_schedule}
WHERE loan_id IS NOT NULL AND installment_no IS NOT NULL
GROUP BY loan_id, installment_no
HAVING count(*) > 1
