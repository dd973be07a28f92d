"""A deterministic, realistic synthetic factoring portfolio for `db seed`, `demo` and benchmarks.

Loans are generated lazily, a chunk at a time (in a helper thread, while the previous chunk is
streamed with COPY), so memory stays flat at any size. The same (loans, seed, through) always
writes byte-identical tables. Money is kept in integer cents and rates in integer millionths.
"""

from __future__ import annotations

import calendar
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import product
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.errors import UsageError
from abaco_cli.settings import SourceTables

SeedProgress = Callable[[str, int, int], None]  # (stage, done, total)
# Days are date ordinals, amounts integer cents.
Event = tuple[int, int, int, int, int, int, int, int]  # day, principal .. fee_tax, rebate
Installment = tuple[int, int, int]  # due day, principal_due, interest_due
Chunk = tuple[list[str], list[str], list[str]]  # COPY lines of loans, schedule, payments

ROLES = ("customers", "loans", "payment_schedule", "payments", "rate_card")
COLUMNS = {
    "customers": "customer_id customer_type segment industry city state country created_at "
    "updated_at",
    "loans": "loan_id customer_id company product_type risk_band currency disbursement_date "
    "maturity_date term_days principal interest_rate_apr origination_fee origination_fee_taxes "
    "status written_off_date created_at updated_at",
    "payment_schedule": "loan_id installment_no due_date principal_due interest_due fee_due "
    "other_due tax_due",
    "payments": "payment_id loan_id paid_on principal_paid interest_paid fee_paid other_paid "
    "tax_paid fee_tax_paid rebates currency created_at updated_at",
    "rate_card": "product_type risk_band tenor_min_days tenor_max_days ticket_min ticket_max apr "
    "fee_rate effective_from effective_to",
}
CHUNK_LOANS = 25_000
NULL = "\\N"

BANDS = "ABCDE"
BAND_MIX = (0.18, 0.48, 0.76, 0.92)  # cumulative share of customers in bands A-D
TENORS = ((0, 30), (31, 60), (61, 90), (91, 180))
# Ticket bands in cents, inclusive.
TICKETS = ((0, 99_999), (100_000, 499_999), (500_000, 2_499_999), (2_500_000, 9_999_999),
           (10_000_000, 1_000_000_000))  # fmt: skip
TICKET_STARTS = tuple(low for low, _ in TICKETS)
BAND_APR = (230_000, 290_000, 350_000, 430_000, 520_000)  # millionths
TENOR_APR = (20_000, 0, -10_000, -20_000)
TICKET_APR = (50_000, 30_000, 0, -20_000, -30_000)
CARD_APR = (0, 15_000)  # the newer card prices 1.5 points higher
BAND_FEE = (10_000, 13_500, 17_000, 21_000, 25_000)
TICKET_FEE = (4_000, 2_000, 0, -1_000, -2_000)
# Narrower cells overlapping the grid on purpose ("the narrowest matching band wins"):
# band, tenor min/max days, ticket min/max cents, apr, fee_rate.
OVERRIDES = (("A", 31, 45, 500_000, 999_999, 210_000, 12_000),
             ("C", 10, 30, 100_000, 249_999, 360_000, 18_000),
             ("E", 91, 120, 2_500_000, 4_999_999, 450_000, 22_000))  # fmt: skip
BAND_OVERRIDES = tuple(tuple(o[1:] for o in OVERRIDES if o[0] == band) for band in BANDS)
# Repayment behaviour per band, cumulative: on time, early, late, partial, cured, else never.
ON_TIME, EARLY, LATE, PARTIAL, CURED, DEFAULT = range(6)
OUTCOMES = ((0.58, 0.80, 0.94, 0.97, 0.99), (0.54, 0.73, 0.91, 0.95, 0.98),
            (0.49, 0.65, 0.87, 0.93, 0.97), (0.44, 0.57, 0.83, 0.90, 0.955),
            (0.39, 0.49, 0.78, 0.87, 0.93))  # fmt: skip
TERMS, TERM_MIX = (30, 45, 60, 90, 120), (0.28, 0.45, 0.65, 0.80, 0.88)  # else 10-180 days
SEGMENTS = ("Micro", "SME", "Corporate")
SEGMENT_MIX = (0.35, 0.85)
SEGMENT_TICKET = ((900.0, 0.7), (3_500.0, 0.8), (15_000.0, 0.8))  # median USD, log sigma
SOLE_PROPRIETORS = (0.6, 0.1, 0.0)  # share of customer_type 'sole_proprietor' per segment
INDUSTRIES = ("Manufacturing", "Retail", "Wholesale", "Construction", "Transportation",
              "Agribusiness", "Food and Beverage", "Healthcare", "Technology", "Textiles",
              "Professional Services", "Logistics")  # fmt: skip
PLACES = (("San Salvador", "San Salvador"), ("Soyapango", "San Salvador"),
          ("Mejicanos", "San Salvador"), ("Ilopango", "San Salvador"), ("Apopa", "San Salvador"),
          ("Santa Tecla", "La Libertad"), ("Antiguo Cuscatlan", "La Libertad"),
          ("Colon", "La Libertad"), ("Santa Ana", "Santa Ana"), ("San Miguel", "San Miguel"),
          ("Sonsonate", "Sonsonate"), ("Usulutan", "Usulutan"), ("Ahuachapan", "Ahuachapan"),
          ("Zacatecoluca", "La Paz"), ("Cojutepeque", "Cuscatlan"),
          ("La Union", "La Union"))  # fmt: skip
DPD_BOUNDS = (0, 1, 31, 61, 91, 121, 181)  # lower bounds of the default delinquency buckets
# Credit-risk cases, chosen by loan number (see _credit_risk_case and _recovery)
CENTS_EVERY, VERY_LATE_EVERY, RECOVERED_EVERY = 89, 61, 5
OTHER_COMPANY = {"ABT": "ABF", "ABF": "ABT"}
TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
CLOCKS = tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86_400))


@dataclass(frozen=True)
class SeedResult:
    """Row counts of one seeded portfolio."""

    customers: int
    loans: int
    installments: int
    payments: int
    rate_cards: int
    through: date


def _half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _money(cents: int) -> str:
    units, rest = divmod(cents, 100)
    return f"{units}.{TWO_DIGITS[rest]}"


def _rate(millionths: int) -> str:
    return f"{millionths // 1_000_000}.{millionths % 1_000_000:06d}"


def _add_months(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _cell_price(card: int, band: int, tenor: int, ticket: int) -> tuple[int, int]:
    apr = BAND_APR[band] + TENOR_APR[tenor] + TICKET_APR[ticket] + CARD_APR[card]
    return apr, min(30_000, max(10_000, BAND_FEE[band] + TICKET_FEE[ticket]))


def _price(card: int, band: int, term: int, principal: int) -> tuple[int, int]:
    """Card APR and fee rate (millionths) of the narrowest cell matching a loan."""
    for t_min, t_max, k_min, k_max, apr, fee in BAND_OVERRIDES[band]:
        if t_min <= term <= t_max and k_min <= principal <= k_max:
            return apr + CARD_APR[card], fee
    tenor = 0 if term <= 30 else 1 if term <= 60 else 2 if term <= 90 else 3
    return _cell_price(card, band, tenor, bisect_right(TICKET_STARTS, principal) - 1)


class _Calendar:
    """Three years of disbursements ending at `through`; volume triples over the window."""

    def __init__(self, through: date) -> None:
        self.through = through.toordinal()
        self.start = (_add_months(through, -36) + timedelta(days=1)).toordinal()
        self.span = self.through - self.start + 1
        self.card_switch = _add_months(through, -18).toordinal()  # last day of the older card
        self.checkpoints = (self.through, _add_months(through, -6).toordinal())
        self.base = self.start - 400
        self.iso = [date.fromordinal(d).isoformat() for d in range(self.base, self.through + 800)]

    def day_at(self, fraction: float) -> int:
        """The disbursement day at a fraction (0 to 1) of the portfolio's loans."""
        grown = (math.sqrt(1 + 8 * fraction) - 1) / 2  # inverse of a linearly growing density
        return self.start + min(self.span - 1, int(self.span * grown))

    def text(self, day: int) -> str:
        return self.iso[day - self.base]

    def stamp(self, day: int, key: int) -> str:
        """A deterministic UTC timestamp in business hours of `day`."""
        return f"{self.iso[day - self.base]} {CLOCKS[28_800 + (key * 7_919) % 36_000]}"


class _Portfolio:
    """Draws customers, then loans in disbursement order with their schedules and payments."""

    def __init__(self, seed: int, cal: _Calendar, loans: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (synthetic data, not a secret)
        self.random = self.rng.random
        self.cal, self.loans = cal, loans
        self.customers = max(5, round(loans / 60))
        self.cum_weight: list[float] = []
        self.profile: list[tuple[int, str, float, float]] = []  # band, company, ticket mu, sigma
        self.next_new = 0
        self.seq = {"ABT": 0, "ABF": 0}
        self.installments = self.payments = 0
        self.uncovered = {(d, b) for d in cal.checkpoints for b in range(1, len(DPD_BOUNDS))}
        self.last_days = min(30, max(7, 10 * cal.span // loans))  # a bucket window is closing

    def between(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def onboard_at(self, k: int) -> float:
        return k * self.loans * 0.95 / self.customers

    def customer_lines(self) -> list[str]:
        """COPY lines of every customer; each gets a first loan soon after its creation."""
        rng, cal, lines, total = self.rng, self.cal, [], 0.0
        for k in range(self.customers):
            segment = bisect_right(SEGMENT_MIX, self.random())
            kind = "sole_proprietor" if self.random() < SOLE_PROPRIETORS[segment] else "company"
            industry, (city, state) = rng.choice(INDUSTRIES), rng.choice(PLACES)
            total += min(40.0, rng.paretovariate(1.5))  # a few customers borrow a lot
            self.cum_weight.append(total)
            median, sigma = SEGMENT_TICKET[segment]
            company = "ABT" if self.random() < 0.68 else "ABF"
            mu = math.log(median * 100) + rng.gauss(0, 0.35)
            self.profile.append((bisect_right(BAND_MIX, self.random()), company, mu, sigma))
            stamp = cal.stamp(cal.day_at(self.onboard_at(k) / self.loans) - self.between(1, 30), k)
            lines.append(
                f"CUS-{k + 1:06d}\t{kind}\t{SEGMENTS[segment]}\t{industry}\t{city}\t{state}\t"
                f"SLV\t{stamp}\t{stamp}\n"
            )
        return lines

    def chunks(self, size: int) -> Iterator[Chunk]:
        for first in range(0, self.loans, size):
            out: Chunk = ([], [], [])
            for i in range(first, min(first + size, self.loans)):
                self._loan(i, *out)
            yield out

    def _customer_for(self, i: int) -> int:
        if self.next_new < self.customers and self.onboard_at(self.next_new) <= i:
            self.next_new += 1
            return self.next_new - 1
        reach = self.cum_weight[self.next_new - 1] * self.random()
        return bisect_right(self.cum_weight, reach, 0, self.next_new - 1)

    def _loan(self, i: int, loan_out: list[str], sched_out: list[str], pay_out: list[str]) -> None:
        cal, rnd = self.cal, self.random
        disb = cal.day_at((i + rnd()) / self.loans)
        cust = self._customer_for(i)
        band, company, mu, sigma = self.profile[cust]
        company = company if rnd() < 0.92 else OTHER_COMPANY[company]
        shift = rnd()
        band = min(4, max(0, band + (-1 if shift < 0.08 else 1 if shift > 0.9 else 0)))
        parts = self.between(2, 4) if rnd() < 0.03 else 1
        if parts > 1:
            term = (60, 90, 120, 150, 180)[self.between(0, 4)]
        else:
            pick = bisect_right(TERM_MIX, rnd())
            term = TERMS[pick] if pick < len(TERMS) else self.between(10, 180)
        principal = min(25_000_000, max(30_000, int(self.rng.lognormvariate(mu, sigma))))
        card_apr, fee_rate = _price(0 if disb <= cal.card_switch else 1, band, term, principal)
        apr = max(120_000, card_apr + max(-20_000, min(20_000, int(self.rng.gauss(0, 6_000)))))
        schedule = _schedule(disb, term, parts, principal, apr)
        outcome = bisect_right(OUTCOMES[band], rnd())
        events, unpaid_due = self._payments(outcome, disb, schedule)
        if parts == 1:
            events = _credit_risk_case(i, outcome, disb + term, principal, events)
        if parts == 1 and self.uncovered:
            events = self._cover_buckets(disb + term, principal, events)
        written_off = None
        if unpaid_due is not None and unpaid_due + 181 <= cal.through and rnd() < 0.65:
            written_off = min(cal.through, unpaid_due + 181 + self.between(0, 90))
        if unpaid_due is not None and i % RECOVERED_EVERY == 0:
            events = _recovery(i, unpaid_due, principal, events)
        events = sorted(e for e in events if e[0] <= cal.through)
        last = max(disb, written_off or disb, events[-1][0] if events else disb)
        self.seq[company] += 1
        loan_id = f"{company}-{self.seq[company]:07d}"
        fee = _half_up(principal * fee_rate, 1_000_000)
        loan_out.append(
            f"{loan_id}\tCUS-{cust + 1:06d}\t{company}\tfactoring\t{BANDS[band]}\tUSD\t"
            f"{cal.text(disb)}\t{cal.text(disb + term)}\t{term}\t{_money(principal)}\t"
            f"{_rate(apr)}\t{_money(fee)}\t{_money(_half_up(fee * 13, 100))}\t"
            f"{self._status(principal, schedule, events, written_off)}\t"
            f"{cal.text(written_off) if written_off else NULL}\t"
            f"{cal.stamp(disb, i)}\t{cal.stamp(last, i)}\n"
        )
        for n, (due, due_principal, due_interest) in enumerate(schedule, 1):
            sched_out.append(
                f"{loan_id}\t{n}\t{cal.text(due)}\t{_money(due_principal)}\t"
                f"{_money(due_interest)}\t0.00\t0.00\t0.00\n"
            )
        self.installments += len(schedule)
        for day, *amounts in events:
            self.payments += 1
            stamp = cal.stamp(day, self.payments)
            money = "\t".join(map(_money, amounts))
            pay_out.append(
                f"PAY-{self.payments:08d}\t{loan_id}\t{cal.text(day)}\t{money}\tUSD\t"
                f"{stamp}\t{stamp}\n"
            )

    def _payments(
        self, outcome: int, disb: int, schedule: list[Installment]
    ) -> tuple[list[Event], int | None]:
        """Every payment a loan will ever get; the due day of its first never-repaid installment."""
        events: list[Event] = []
        stop = self.between(0, len(schedule) - 1) if outcome == DEFAULT else 0
        start = disb
        for n, (due, principal, interest) in enumerate(schedule):
            kind = ON_TIME if n < stop else outcome
            if not self._installment(kind, start, due, principal, interest, events):
                return events, due
            start = due
        return events, None

    def _installment(
        self, kind: int, start: int, due: int, principal: int, interest: int, events: list[Event]
    ) -> bool:
        """Append the payments of one installment (due after `start`); False if never repaid."""
        rnd, between, add = self.random, self.between, events.append
        if kind == ON_TIME:
            add(self._event(due - between(0, 3), principal, interest, 0))
        elif kind == EARLY:
            paid = max(start + 1, due - between(4, max(4, due - start - 1)))
            rebate = _half_up(interest * (due - paid), due - start) if rnd() < 0.4 else 0
            add(self._event(paid, principal, interest, 0, rebate))
        elif kind == LATE:
            lag = 1 + min(169, int(self.rng.expovariate(1 / (12 if rnd() < 0.85 else 55))))
            add(self._event(due + lag, principal, interest, lag))
        else:  # partial, cured or never repaid: a share first, perhaps the rest later
            low, high, first_lag = {
                PARTIAL: (0.3, 0.8, between(-3, 15)),
                CURED: (0.2, 0.5, between(10, 60)),
                DEFAULT: (0.1, 0.3, between(0, 45)),
            }[kind]
            part = int(principal * (low + (high - low) * rnd()))
            part_interest = interest * part // principal
            if kind != DEFAULT or rnd() < 0.3:
                add(self._event(max(start + 1, due + first_lag), part, part_interest, first_lag))
            if kind == DEFAULT or (kind == PARTIAL and rnd() < 0.25):
                return False
            if kind == CURED:  # repaid in full after a long delay, often over 90 days
                lag = between(max(first_lag + 5, 31), 170)
            else:
                lag = min(170, max(first_lag, 0) + 5 + int(self.rng.expovariate(1 / 20)))
            add(self._event(due + lag, principal - part, interest - part_interest, lag))
        return True

    def _event(self, day: int, principal: int, interest: int, lag: int, rebate: int = 0) -> Event:
        """One payment; late ones sometimes carry a late fee (0.5 % a month started, plus IVA)."""
        rnd = self.random
        months = min(6, 1 + lag // 30)
        fee = _half_up(principal * 5 * months, 1000) if lag > 10 and rnd() < 0.3 else 0
        extra = rnd()
        other = self.between(500, 5_000) if extra < 0.02 else 0
        tax = _half_up(interest * 13, 100) if 0.02 <= extra < 0.03 else 0
        return (day, principal, interest, fee, other, tax, _half_up(fee * 13, 100), rebate)

    def _cover_buckets(self, due: int, principal: int, events: list[Event]) -> list[Event]:
        """Leave a bullet loan unpaid when a bucket at a checkpoint would otherwise stay empty."""
        keys = [(d, bisect_right(DPD_BOUNDS, d - due) - 1) for d in self.cal.checkpoints if due < d]
        fresh = [k for k in keys if k in self.uncovered]
        if not fresh:
            return events
        unpaid = [k for k in keys if sum(e[1] for e in events if e[0] <= k[0]) < principal - 1]
        closing = [k for k in fresh if k[0] - due - DPD_BOUNDS[k[1]] < self.last_days]
        if closing and not any(k in unpaid for k in closing):
            events, unpaid = [], keys
        self.uncovered.difference_update(unpaid)
        return events

    def _status(self, principal: int, plan: list[Installment], events: list[Event],
                written_off: int | None) -> str:  # fmt: skip
        """The informational status at `through`: complete, written_off, default or current."""
        paid = sum(e[1] for e in events)
        if paid >= principal:
            return "complete"
        if written_off is not None:
            return "written_off"
        cumulative, through = 0, self.cal.through
        for due, due_principal, _ in plan:
            cumulative += due_principal
            if due < through and cumulative > paid + 1:
                return "default" if through - due >= 90 else "current"
        return "current"


def _credit_risk_case(
    i: int, outcome: int, due: int, principal: int, events: list[Event]
) -> list[Event]:
    """Cases the credit-risk figures need, chosen by the loan's number so that the random
    stream (every other loan) stays as it was: an on-time bullet loan that leaves one cent
    unpaid (settled), and a late one repaid 181 to 400 days after its due date (written off
    on day 181, the payment a recovery)."""
    if len(events) != 1:
        return events
    day, paid, interest, fee, other, tax, fee_tax, rebate = events[0]
    if outcome == ON_TIME and i % CENTS_EVERY == 0:
        return [(day, paid - 1, interest, fee, other, tax, fee_tax, rebate)]
    if outcome == LATE and i % VERY_LATE_EVERY == 0:
        return [(due + 181 + i % 220, paid, interest, fee, other, tax, fee_tax, rebate)]
    return events


def _recovery(i: int, unpaid_due: int, principal: int, events: list[Event]) -> list[Event]:
    """For some never-repaid loans: 20 % to 50 % of what they still owe, paid 200 to 299 days
    after the due date of their first unpaid installment (after a write-off: a recovery)."""
    owed = principal - sum(e[1] for e in events)
    if owed <= 0:
        return events
    amount = owed * (20 + i % 31) // 100
    return [*events, (unpaid_due + 200 + i % 100, amount, 0, 0, 0, 0, 0, 0)]


def _schedule(disb: int, term: int, parts: int, principal: int, apr: int) -> list[Installment]:
    """Equal installments (the last takes the rounding); interest = principal * apr * days / 360."""
    interest = _half_up(principal * apr * term, 360_000_000)
    if parts == 1:
        return [(disb + term, principal, interest)]
    rows = [
        (disb + round(term * n / parts), principal // parts, interest // parts)
        for n in range(1, parts)
    ]
    rest = parts - 1
    rows.append(
        (disb + term, principal - principal // parts * rest, interest - interest // parts * rest)
    )
    return rows


def _rate_card_lines(cal: _Calendar) -> list[str]:
    """Two successive cards: the A-E x tenor x ticket grid plus the narrower overlapping cells."""
    cards = (
        (cal.text(cal.start - 1), cal.text(cal.card_switch)),
        (cal.text(cal.card_switch + 1), NULL),
    )
    grid = list(product(range(len(BANDS)), range(len(TENORS)), range(len(TICKETS))))
    lines = []
    for card, (start, end) in enumerate(cards):
        cells = [
            (BANDS[b], *TENORS[t], *TICKETS[k], *_cell_price(card, b, t, k)) for b, t, k in grid
        ]
        cells += [(*o[:5], o[5] + CARD_APR[card], o[6]) for o in OVERRIDES]
        for band, t_min, t_max, k_min, k_max, apr, fee in cells:
            lines.append(
                f"factoring\t{band}\t{t_min}\t{t_max}\t{_money(k_min)}\t{_money(k_max)}\t"
                f"{_rate(apr)}\t{_rate(fee)}\t{start}\t{end}\n"
            )
    return lines


def _copy(cur: psycopg.Cursor[Any], name: sql.Identifier, role: str, lines: list[str]) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS[role].split()))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy:
        for start in range(0, len(lines), 2_000):
            copy.write("".join(lines[start : start + 2_000]))


def _prepare(
    cur: psycopg.Cursor[Any], tables: SourceTables, replace: bool
) -> dict[str, sql.Identifier]:
    """Qualified names of the five tables, checked empty (or emptied when `replace`)."""
    names = {role: sql.Identifier(*tables.split(role)) for role in ROLES}
    if replace:
        cur.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(names.values()))
        )
        return names
    probes = sql.SQL(", ").join(
        sql.SQL("EXISTS (SELECT FROM {})").format(n) for n in names.values()
    )
    row = cur.execute(sql.SQL("SELECT {}").format(probes)).fetchone() or ()
    full = [
        str(getattr(tables, role)) for role, has_rows in zip(ROLES, row, strict=True) if has_rows
    ]
    if full:
        raise UsageError(
            f"{full[0]} already holds data; pass --replace to overwrite it",
            hint=f"Tables with rows: {', '.join(full)}. --replace empties all five first.",
        )
    return names


def seed_portfolio(
    conn: psycopg.Connection[Any],
    tables: SourceTables,
    *,
    loans: int,
    seed: int,
    through: date = date(2025, 12, 31),
    replace: bool = False,
    progress: SeedProgress | None = None,
) -> SeedResult:
    """Write a synthetic portfolio of `loans` loans disbursed over the three years to `through`.

    Refuses tables that hold rows unless `replace` (then truncates all five); commits.
    """
    if loans < 1:
        raise UsageError(f"the number of loans must be at least 1, not {loans}")
    report = progress or (lambda stage, done, total: None)
    cal = _Calendar(through)
    portfolio = _Portfolio(seed, cal, loans)
    with conn.cursor() as cur:
        names = _prepare(cur, tables, replace)
        cards = _rate_card_lines(cal)
        _copy(cur, names["rate_card"], "rate_card", cards)
        report("rate_card", len(cards), len(cards))
        _copy(cur, names["customers"], "customers", portfolio.customer_lines())
        report("customers", portfolio.customers, portfolio.customers)
        chunks, done = portfolio.chunks(CHUNK_LOANS), 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="abaco-seed") as pool:
            pending = pool.submit(next, chunks, None)  # generate the next chunk while copying
            while (chunk := pending.result()) is not None:
                pending = pool.submit(next, chunks, None)
                for role, lines in zip(
                    ("loans", "payment_schedule", "payments"), chunk, strict=True
                ):
                    _copy(cur, names[role], role, lines)
                done += len(chunk[0])
                report("loans", done, loans)
    conn.commit()
    return SeedResult(
        customers=portfolio.customers,
        loans=loans,
        installments=portfolio.installments,
        payments=portfolio.payments,
        rate_cards=len(cards),
        through=through,
    )


def analyze(conn: psycopg.Connection[Any], tables: SourceTables) -> None:
    """Fresh statistics for the five source tables (as autovacuum would make, but now), so
    that the first export after a seed gets a good plan."""
    for role in tables.roles():
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*tables.split(role))))


@dataclass(frozen=True)
class DatabaseFacts:
    """What `db seed --replace` asks before it empties anything."""

    name: str  # current_database()
    comment: str  # COMMENT ON DATABASE (a LocalCluster marks its own)
    local_socket: bool  # reached over a unix socket (a LocalCluster listens on no TCP address)


def database_facts(conn: psycopg.Connection[Any]) -> DatabaseFacts | None:
    row = conn.execute(
        "SELECT current_database(), shobj_description(oid, 'pg_database'),"
        " inet_server_addr() IS NULL"
        " FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    conn.rollback()
    if row is None:
        return None
    return DatabaseFacts(str(row[0]), str(row[1] or ""), bool(row[2]))
