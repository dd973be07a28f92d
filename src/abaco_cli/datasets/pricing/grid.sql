-- pricing/grid: realized pricing of the loans disbursed in the window, per product_type x
-- risk_band x tenor band x ticket band. Rates are weighted by principal (disbursed); the
-- effective rate is APR + origination_fee / principal annualised over the tenor
-- (x day_count_basis / tenor_days); outstanding, PAR30 and the write-offs use each loan's
-- delinquency at D (dpd/delinquency.sql over the window's loans): outstanding over active
-- loans (a settled loan's cents left out), the written-off share on the gross write-off
-- (frozen at the write-off date, version 2).
WITH w AS ({window_loans}),
d AS (
    SELECT x.*, CASE WHEN x.outstanding > %(tolerance)s THEN x.outstanding ELSE 0 END AS active
    FROM ({delinquency}) AS x
)
SELECT %(as_of)s::date                                          AS as_of_date,
       (%(window_after)s::date + 1)                            AS window_from,
       w.product_type::text                                    AS product_type,
       w.risk_band::text                                       AS risk_band,
       w.tenor_band_value::integer                             AS tenor_band_value,
       w.tenor_band::text                                      AS tenor_band,
       w.ticket_band_value::integer                            AS ticket_band_value,
       w.ticket_band::text                                     AS ticket_band,
       count(*)::bigint                                        AS loans,
       sum(w.principal)::numeric(18,2)                         AS disbursed,
       (sum(w.principal * w.interest_rate_apr)
        / nullif(sum(w.principal) FILTER (WHERE w.interest_rate_apr IS NOT NULL), 0))::numeric(18,10)
                                                               AS weighted_apr,
       (sum(w.origination_fee) / nullif(sum(w.principal), 0))::numeric(18,10) AS weighted_fee_rate,
       ((sum(w.principal * w.interest_rate_apr
             + w.origination_fee * %(day_count_basis)s / w.tenor_days)
             FILTER (WHERE w.interest_rate_apr IS NOT NULL AND w.tenor_days > 0))
        / nullif(sum(w.principal)
                 FILTER (WHERE w.interest_rate_apr IS NOT NULL AND w.tenor_days > 0), 0))::numeric(18,10)
                                                               AS weighted_effective_rate,
       coalesce(sum(d.active), 0)::numeric(18,2)               AS outstanding,
       coalesce(sum(d.active) FILTER (WHERE d.days_past_due >= 30), 0)::numeric(18,2)
                                                               AS par_30_amount,
       (coalesce(sum(d.active) FILTER (WHERE d.days_past_due >= 30), 0)
        / nullif(sum(d.active), 0))::numeric(18,10)                     AS par_30,
       coalesce(sum(d.written_off_balance), 0)::numeric(18,2)  AS written_off_balance,
       (coalesce(sum(d.gross_write_off), 0) / nullif(sum(w.principal), 0))::numeric(18,10)
                                                               AS written_off_share,
       coalesce(sum(d.gross_write_off), 0)::numeric(18,2)      AS gross_write_off
FROM w
LEFT JOIN d ON d.loan_id = w.loan_id
GROUP BY w.product_type, w.risk_band, w.tenor_band_value, w.tenor_band, w.ticket_band_value,
         w.ticket_band
ORDER BY w.product_type COLLATE "C", w.risk_band COLLATE "C" NULLS LAST,
         w.tenor_band_value NULLS LAST, w.ticket_band_value NULLS LAST
