-- The arrears history of every loan up to a last day D (the end of that day): common table
-- expressions for the WITH list of a host query (datasets/states/__init__.py, arrears_history).
-- They define, for the host to read:
--
--   h_loans          every loan disbursed on or before D: the attributes its host asked for
--                    (beside loan_id, customer_id, disbursement_date, principal,
--                    written_off_date), its payments dated
--                    on or before D (principal paid_total, first_paid_on, last_paid_on,
--                    has_reversal), its installments due on or before D (scheduled: how many;
--                    last_due_date; of those due before D: installments, due_total,
--                    first_due_date)
--   arrears_entries  one row per loan, lateness level X of the history's levels and day W on or
--                    before D on which the loan's days past due reached X from below (an
--                    "entry"), with paid_before: the principal it had paid by the end of W - 1,
--                    and the loan's customer_id, principal and disbursement_date
--   write_offs       one row per loan written off on or before D (version 2, below):
--                    write_off_date, paid_before, gross_write_off, and the loan's customer_id,
--                    principal and disbursement_date
--
-- The walk. By dpd/delinquency.sql, days past due at the end of day W are at least X exactly
-- when some installment due on or before W - X is unpaid: when the principal due on
-- installments due on or before W - X exceeds the principal paid by W plus the tolerance. That
-- amount rises only on the day X days after a due date and falls only on a payment; it can turn
-- from "not late by X" to "late by X" only on a day d + X (d a due date) or on a day whose
-- payments net to a negative principal (a reversal). Those days are the only candidates, and
-- each is an entry when the loan is late by X on it and was not on the day before. Most loans
-- are settled well before any candidate (every payment on or before d + the smallest level,
-- adding up to what is due): one pass over the loans leaves them out (h_walked) before the
-- levels are expanded.
--
-- Write-off (version 2): a loan is written off from its write-off date on, for good: the
-- earlier of written_off_date and the first day its days past due exceeded
-- write_off_after_days (an entry at level write_off_after_days + 1), never before its
-- disbursement. Its gross write-off is its outstanding principal at the end of the day before,
-- frozen; cash received from the write-off date on is a recovery.
h_loans AS (
    -- every loan disbursed on or before D with its payments dated on or before D (principal
    -- paid_total, first_paid_on, last_paid_on, has_reversal: a payment of negative principal)
    -- and its installments due on or before D (scheduled: how many; last_due_date; of those
    -- due before D: installments, due_total, first_due_date; walk_*: those due at least the
    -- smallest level before D)
    SELECT l.loan_id, l.customer_id, l.disbursement_date, l.principal, l.written_off_date,
           {attributes}
           p.paid_total, p.first_paid_on, p.last_paid_on, coalesce(p.has_reversal, false)
               AS has_reversal,
           coalesce(s.scheduled, 0) AS scheduled, coalesce(s.installments, 0) AS installments,
           coalesce(s.due_total, 0) AS due_total, s.first_due_date, s.last_due_date,
           s.walk_first_due, s.walk_last_due, s.walk_due_total
    FROM {loans} AS l
    LEFT JOIN (
        SELECT p.loan_id,
               sum(p.principal_paid)         AS paid_total,
               min(p.paid_on)                AS first_paid_on,
               max(p.paid_on)                AS last_paid_on,
               bool_or(p.principal_paid < 0) AS has_reversal
        FROM {payments} AS p
        WHERE p.paid_on <= {through}
        GROUP BY p.loan_id
        ORDER BY p.loan_id
    ) AS p ON p.loan_id = l.loan_id
    LEFT JOIN (
        SELECT s.loan_id,
               count(*)                                                  AS scheduled,
               count(*) FILTER (WHERE s.due_date < {through})            AS installments,
               sum(s.principal_due) FILTER (WHERE s.due_date < {through}) AS due_total,
               min(s.due_date) FILTER (WHERE s.due_date < {through})     AS first_due_date,
               max(s.due_date)                                           AS last_due_date,
               min(s.due_date) FILTER (WHERE s.due_date <= {through} - {min_level})
                                                                         AS walk_first_due,
               max(s.due_date) FILTER (WHERE s.due_date <= {through} - {min_level})
                                                                         AS walk_last_due,
               sum(s.principal_due) FILTER (WHERE s.due_date <= {through} - {min_level})
                                                                         AS walk_due_total
        FROM {payment_schedule} AS s
        WHERE s.due_date <= {through}
        GROUP BY s.loan_id
        ORDER BY s.loan_id
    ) AS s ON s.loan_id = l.loan_id
    WHERE l.disbursement_date <= {through}
    ORDER BY l.loan_id
),
h_walked AS (
    -- one pass over the loans for the few the walk and the write-offs read: those with a due
    -- date at least the smallest level before D not settled within it (a single due date: its
    -- payments all on or before that day, adding up to what was due, settle it for every
    -- level; several due dates are judged one by one below), a reversal, or a
    -- written_off_date on or before D
    SELECT u.*
    FROM h_loans AS u
    WHERE (u.walk_first_due IS NOT NULL
           AND (u.walk_first_due < u.walk_last_due
                OR u.first_paid_on IS NULL
                OR u.last_paid_on > u.walk_first_due + {min_level}
                OR u.paid_total < u.walk_due_total - %(tolerance)s))
       OR u.has_reversal
       OR u.written_off_date <= {through}
),
h_due_points AS (
    -- each due date d of a loan: the principal due on its installments due on or before d
    -- (due_through), and on or before its previous due date (due_before; null for the first)
    SELECT u.loan_id, u.walk_first_due AS due_date, u.walk_due_total AS due_through,
           NULL::numeric AS due_before, u.paid_total, u.first_paid_on, u.last_paid_on,
           u.customer_id, u.principal, u.disbursement_date
    FROM h_walked AS u
    WHERE u.walk_first_due = u.walk_last_due
    UNION ALL
    SELECT u.loan_id, c.due_date, c.due_through, c.due_before,
           u.paid_total, u.first_paid_on, u.last_paid_on,
           u.customer_id, u.principal, u.disbursement_date
    FROM h_walked AS u
    CROSS JOIN LATERAL (
        SELECT g.due_date, g.due_through,
               lag(g.due_through) OVER (ORDER BY g.due_date) AS due_before
        FROM (
            SELECT s.due_date, sum(sum(s.principal_due)) OVER (ORDER BY s.due_date) AS due_through
            FROM {payment_schedule} AS s
            WHERE s.loan_id = u.loan_id AND s.due_date <= u.walk_last_due
            GROUP BY s.due_date
        ) AS g
    ) AS c
    WHERE u.walk_first_due < u.walk_last_due
),
h_late AS (
    SELECT d.*
    FROM h_due_points AS d
    WHERE d.first_paid_on IS NULL
       OR d.last_paid_on > d.due_date + {min_level}
       OR d.paid_total < d.due_through - %(tolerance)s
),
h_candidates AS (
    SELECT d.loan_id, x.level, d.due_date + x.level AS day,
           d.due_through AS due_by_day, d.due_before AS due_by_eve,
           d.paid_total, d.first_paid_on, d.last_paid_on,
           d.customer_id, d.principal, d.disbursement_date
    FROM h_late AS d
    CROSS JOIN unnest({levels}) AS x (level)
    WHERE d.due_date + x.level <= {through}
    UNION ALL
    -- a reversal day r: the principal due on or before r - X, and on or before r - 1 - X
    SELECT t.loan_id, x.level, r.paid_on,
           (SELECT sum(s.principal_due) FROM {payment_schedule} AS s
            WHERE s.loan_id = t.loan_id AND s.due_date <= r.paid_on - x.level),
           (SELECT sum(s.principal_due) FROM {payment_schedule} AS s
            WHERE s.loan_id = t.loan_id AND s.due_date <= r.paid_on - 1 - x.level),
           t.paid_total, t.first_paid_on, t.last_paid_on,
           t.customer_id, t.principal, t.disbursement_date
    FROM h_walked AS t
    CROSS JOIN LATERAL (
        SELECT p.paid_on FROM {payments} AS p
        WHERE p.loan_id = t.loan_id AND p.paid_on <= {through}
        GROUP BY p.paid_on
        HAVING sum(p.principal_paid) < 0
    ) AS r
    CROSS JOIN unnest({levels}) AS x (level)
    WHERE t.has_reversal
),
h_evaluated AS (
    -- principal paid by the end of the candidate day and of the day before: nothing before the
    -- first payment, everything from the last one on, else the payments themselves
    SELECT c.loan_id, c.level, c.day, c.due_by_day, c.due_by_eve,
           c.customer_id, c.principal, c.disbursement_date,
           CASE WHEN c.first_paid_on IS NULL OR c.day < c.first_paid_on THEN 0
                WHEN c.day >= c.last_paid_on THEN c.paid_total
                ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                      WHERE p.loan_id = c.loan_id AND p.paid_on <= c.day)
           END AS paid_by_day,
           CASE WHEN c.first_paid_on IS NULL OR c.day - 1 < c.first_paid_on THEN 0
                WHEN c.day - 1 >= c.last_paid_on THEN c.paid_total
                ELSE (SELECT sum(p.principal_paid) FROM {payments} AS p
                      WHERE p.loan_id = c.loan_id AND p.paid_on <= c.day - 1)
           END AS paid_by_eve
    FROM h_candidates AS c
    OFFSET 0
),
arrears_entries AS (
    SELECT DISTINCT e.loan_id, e.level, e.day AS entered_on, e.paid_by_eve AS paid_before,
           e.customer_id, e.principal, e.disbursement_date
    FROM h_evaluated AS e
    WHERE e.due_by_day - e.paid_by_day > %(tolerance)s
      AND NOT coalesce(e.due_by_eve - e.paid_by_eve > %(tolerance)s, false)
),
write_offs AS (
    SELECT w.loan_id, w.customer_id, w.principal, w.disbursement_date, w.write_off_date,
           w.paid_before, greatest(w.principal - w.paid_before, 0) AS gross_write_off
    FROM (
        SELECT f.loan_id, f.customer_id, f.principal, f.disbursement_date, f.write_off_date,
               coalesce(f.paid_before,
                        (SELECT coalesce(sum(p.principal_paid), 0) FROM {payments} AS p
                         WHERE p.loan_id = f.loan_id AND p.paid_on < f.write_off_date))
                   AS paid_before
        FROM (
            SELECT DISTINCT ON (x.loan_id)
                   x.loan_id, x.customer_id, x.principal, x.disbursement_date,
                   greatest(x.day, x.disbursement_date) AS write_off_date,
                   CASE WHEN x.day >= x.disbursement_date THEN x.paid_before END AS paid_before
            FROM (
                SELECT e.loan_id, e.entered_on AS day, e.paid_before, e.customer_id,
                       e.principal, e.disbursement_date
                FROM arrears_entries AS e
                WHERE e.level = {write_off_level}
                UNION ALL
                SELECT o.loan_id, o.written_off_date, NULL, o.customer_id, o.principal,
                       o.disbursement_date
                FROM h_walked AS o
                WHERE o.written_off_date <= {through}
            ) AS x
            ORDER BY x.loan_id, x.day, x.paid_before NULLS LAST
        ) AS f
        WHERE f.write_off_date <= {through}
    ) AS w
)
