-- pricing/adherence: every loan disbursed in the window against the rate card. The card in
-- effect on the disbursement date (effective_from <= date <= effective_to, open when null) whose
-- band holds the loan (same product_type; its risk_band, or a card without one; tenor and
-- ticket within the inclusive bounds) applies; when several do, the narrowest wins: a card
-- naming the risk band before one without, then the smallest tenor span, then the smallest
-- ticket span, then the lowest rate_card_id. A loan that matches no band is kept, flagged, with
-- nulls for the card's columns.
WITH w AS ({window_loans}),
candidates AS (
    SELECT w.loan_id, c.*
    FROM w
    JOIN {rate_card} AS c ON c.product_type = w.product_type AND c.risk_band = w.risk_band
    WHERE w.tenor_days BETWEEN c.tenor_min_days AND c.tenor_max_days
      AND w.principal BETWEEN c.ticket_min AND c.ticket_max
      AND w.disbursement_date >= c.effective_from
      AND (c.effective_to IS NULL OR w.disbursement_date <= c.effective_to)
    UNION ALL
    SELECT w.loan_id, c.*
    FROM w
    JOIN {rate_card} AS c ON c.product_type = w.product_type AND c.risk_band IS NULL
    WHERE w.tenor_days BETWEEN c.tenor_min_days AND c.tenor_max_days
      AND w.principal BETWEEN c.ticket_min AND c.ticket_max
      AND w.disbursement_date >= c.effective_from
      AND (c.effective_to IS NULL OR w.disbursement_date <= c.effective_to)
),
ranked AS (
    SELECT c.*,
           row_number() OVER (
               PARTITION BY c.loan_id
               ORDER BY (c.risk_band IS NULL), c.tenor_max_days - c.tenor_min_days,
                        c.ticket_max - c.ticket_min, c.rate_card_id
           ) AS rank
    FROM candidates AS c
)
SELECT %(as_of)s::date                                   AS as_of_date,
       w.loan_id::text                                   AS loan_id,
       w.customer_id::text                               AS customer_id,
       w.product_type::text                              AS product_type,
       w.risk_band::text                                 AS risk_band,
       w.disbursement_date                               AS disbursement_date,
       w.tenor_days::integer                             AS tenor_days,
       w.principal::numeric(18,2)                        AS principal,
       w.tenor_band::text                                AS tenor_band,
       w.ticket_band::text                               AS ticket_band,
       w.interest_rate_apr::numeric(18,10)               AS apr,
       (w.origination_fee / nullif(w.principal, 0))::numeric(18,10) AS fee_rate,
       (r.rate_card_id IS NOT NULL)                      AS band_matched,
       r.rate_card_id::bigint                            AS rate_card_id,
       r.effective_from                                  AS card_effective_from,
       r.tenor_min_days::integer                         AS card_tenor_min_days,
       r.tenor_max_days::integer                         AS card_tenor_max_days,
       r.ticket_min::numeric(18,2)                       AS card_ticket_min,
       r.ticket_max::numeric(18,2)                       AS card_ticket_max,
       r.apr::numeric(18,10)                             AS card_apr,
       r.fee_rate::numeric(18,10)                        AS card_fee_rate,
       (w.interest_rate_apr - r.apr)::numeric(18,10)     AS apr_deviation,
       (w.origination_fee / nullif(w.principal, 0) - r.fee_rate)::numeric(18,10) AS fee_rate_deviation,
       (abs(w.interest_rate_apr - r.apr) <= %(apr_tolerance)s) AS is_adherent
FROM w
LEFT JOIN ranked AS r ON r.loan_id = w.loan_id AND r.rank = 1
ORDER BY w.loan_id COLLATE "C"
