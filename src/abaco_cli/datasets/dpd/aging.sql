-- dpd/aging: per bucket, the active loans (not written off, outstanding above the tolerance: a
-- settled loan's leftover cents are not active), their customers, outstanding and share of
-- total outstanding. Every bucket of the policy appears, empty or not.
WITH d AS ({delinquency}),
active AS (
    SELECT * FROM d WHERE NOT d.is_written_off AND d.outstanding > %(tolerance)s
),
buckets AS (
    SELECT * FROM unnest(
        %(bucket_values)s::integer[], %(bucket_labels)s::text[], %(bucket_descriptions)s::text[]
    ) AS b (dpd_bucket_value, dpd_bucket, description)
),
total AS (
    SELECT sum(outstanding) AS outstanding FROM active
)
SELECT %(as_of)s::date                                     AS as_of_date,
       b.dpd_bucket_value::integer                         AS dpd_bucket_value,
       b.dpd_bucket::text                                  AS dpd_bucket,
       b.description::text                                 AS description,
       count(a.loan_id)::bigint                            AS loans,
       count(DISTINCT a.customer_id)::bigint               AS customers,
       coalesce(sum(a.outstanding), 0)::numeric(18,2)      AS outstanding,
       coalesce(sum(a.past_due_amount), 0)::numeric(18,2)  AS past_due_amount,
       (coalesce(sum(a.outstanding), 0) / nullif((SELECT outstanding FROM total), 0))::numeric(18,10)
                                                           AS share_of_outstanding
FROM buckets AS b
LEFT JOIN active AS a ON a.dpd_bucket_value = b.dpd_bucket_value
GROUP BY b.dpd_bucket_value, b.dpd_bucket, b.description
ORDER BY b.dpd_bucket_value
