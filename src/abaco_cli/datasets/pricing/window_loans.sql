-- The loans disbursed in the pricing window (after window_after, through D), with their tenor
-- (term_days, else maturity_date - disbursement_date) and their tenor and ticket bands: each
-- band runs from its minimum up to the next band's minimum; values count from 0.
SELECT w.*,
       (%(tenor_labels)s::text[])[w.tenor_band_value + 1]  AS tenor_band,
       (%(ticket_labels)s::text[])[w.ticket_band_value + 1] AS ticket_band
FROM (
    SELECT l.loan_id, l.customer_id, l.product_type, l.risk_band, l.disbursement_date,
           l.principal, l.interest_rate_apr, coalesce(l.origination_fee, 0) AS origination_fee,
           coalesce(l.term_days, l.maturity_date - l.disbursement_date) AS tenor_days,
           nullif(width_bucket(coalesce(l.term_days, l.maturity_date - l.disbursement_date),
                               %(tenor_mins)s::integer[]), 0) - 1 AS tenor_band_value,
           nullif(width_bucket(l.principal, %(ticket_mins)s::numeric[]), 0) - 1
               AS ticket_band_value
    FROM {loans} AS l
    WHERE l.disbursement_date > %(window_after)s AND l.disbursement_date <= %(as_of)s
) AS w
