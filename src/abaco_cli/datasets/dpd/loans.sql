-- dpd/loans: one row per loan in scope at the as-of date.
SELECT d.* FROM ({delinquency}) AS d ORDER BY d.loan_id COLLATE "C"
