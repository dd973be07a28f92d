"""A deterministic, realistic synthetic factoring portfolio for `db seed`, `demo` and benchmarks.

Rows are generated lazily, a chunk of loans at a time, and streamed with COPY, so memory stays
flat at any size. The same (loans, seed, through) always writes byte-identical tables. Money is
kept in integer cents and rates in integer millionths, so every amount is exact.
"""

from __future__ import annotations

import calendar
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.errors import UsageError
from abaco_cli.settings import SourceTables

SeedProgress = Callable[[str, int, int], None]  # (stage, done, total)
Event = tuple[
    int, int, int, int, int, int, int, int
]  # day, principal, interest, fee, other, tax, fee_tax, rebate
Installment = tuple[int, int, int]  # due day (ordinal), principal_due, interest_due

ROLES = ("customers", "loans", "payment_schedule", "payments", "rate_card")
COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "customer_type", "segment", "industry", "city", "state",
                  "country", "created_at", "updated_at"),
    "loans": ("loan_id", "customer_id", "company", "product_type", "risk_band", "currency",
              "disbursement_date", "maturity_date", "term_days", "principal", "interest_rate_apr",
              "origination_fee", "origination_fee_taxes", "status", "written_off_date",
              "created_at", "updated_at"),
    "payment_schedule": ("loan_id", "installment_no", "due_date", "principal_due", "interest_due",
                         "fee_due", "other_due", "tax_due"),
    "payments": ("payment_id", "loan_id", "paid_on", "principal_paid", "interest_paid", "fee_paid",
                 "other_paid", "tax_paid", "fee_tax_paid", "rebates", "currency", "created_at",
                 "updated_at"),
    "rate_card": ("product_type", "risk_band", "tenor_min_days", "tenor_max_days", "ticket_min",
                  "ticket_max", "apr", "fee_rate", "effective_from", "effective_to"),
}  # fmt: skip
CHUNK_LOANS = 25_000

BANDS = "ABCDE"
BAND_MIX = (0.18, 0.48, 0.76, 0.92, 1.0)  # cumulative share of customers per band
TENORS = ((0, 30), (31, 60), (61, 90), (91, 180))
TICKETS = (
    (0, 99_999),
    (100_000, 499_999),
    (500_000, 2_499_999),
    (2_500_000, 9_999_999),
    (10_000_000, 1_000_000_000),
)  # fmt: skip  (cents, inclusive)
BAND_APR = (230_000, 290_000, 350_000, 430_000, 520_000)  # millionths
TENOR_APR = (20_000, 0, -10_000, -20_000)
TICKET_APR = (50_000, 30_000, 0, -20_000, -30_000)
CARD_APR = (0, 15_000)  # the newer card priced 1.5 points higher
BAND_FEE = (10_000, 13_500, 17_000, 21_000, 25_000)
TICKET_FEE = (4_000, 2_000, 0, -1_000, -2_000)
# Narrower cells overlapping the grid on purpose ("the narrowest matching band wins"):
# band, tenor min/max days, ticket min/max cents, apr, fee_rate.
OVERRIDES = (("A", 31, 45, 500_000, 999_999, 210_000, 12_000),
             ("C", 10, 30, 100_000, 249_999, 360_000, 18_000),
             ("E", 91, 120, 2_500_000, 4_999_999, 450_000, 22_000))  # fmt: skip
# Outcomes per band (cumulative): on time, early, late, partial, cured, never repaid.
ON_TIME, EARLY, LATE, PARTIAL, CURED, DEFAULT = range(6)
OUTCOMES = ((0.56, 0.76, 0.92, 0.96, 0.98), (0.52, 0.69, 0.89, 0.94, 0.97),
            (0.47, 0.61, 0.85, 0.92, 0.96), (0.42, 0.53, 0.81, 0.89, 0.94),
            (0.37, 0.45, 0.76, 0.86, 0.92))  # fmt: skip
TERMS = ((30, 0.28), (45, 0.45), (60, 0.65), (90, 0.80), (120, 0.88))  # else 10-180 days
SEGMENTS = (
    ("Micro", 0.35, 900.0, 0.7),
    ("SME", 0.85, 3_500.0, 0.8),
    ("Corporate", 1.0, 15_000.0, 0.8),
)  # name, cumulative share, median USD, sigma
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
DPD_BOUNDS = (0, 1, 31, 61, 91, 121, 181)  # lower bounds of the default buckets
OTHER_COMPANY = {"ABT": "ABF", "ABF": "ABT"}
SOLE_PROPRIETORS = {"Micro": 0.6, "SME": 0.1, "Corporate": 0.0}
NULL = "\\N"


@dataclass(frozen=True)
class SeedResult:
    """What one seed wrote."""

    customers: int
    loans: int
    installments: int
    payments: int
    rate_cards: int
    through: date


def _half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _rate(millionths: int) -> str:
    return f"{millionths // 1_000_000}.{millionths % 1_000_000:06d}"


def _add_months(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _cell_price(card: int, band: int, tenor: int, ticket: int) -> tuple[int, int]:
    """APR and fee rate (millionths) of one cell of the rate-card grid."""
    apr = BAND_APR[band] + TENOR_APR[tenor] + TICKET_APR[ticket] + CARD_APR[card]
    return apr, min(30_000, max(10_000, BAND_FEE[band] + TICKET_FEE[ticket]))


def _price(card: int, band: int, term: int, principal: int) -> tuple[int, int]:
    """Card APR and fee rate of the narrowest cell matching a loan."""
    for o_band, t_min, t_max, k_min, k_max, apr, fee in OVERRIDES:
        if o_band == BANDS[band] and t_min <= term <= t_max and k_min <= principal <= k_max:
            return apr + CARD_APR[card], fee
    tenor = next(n for n, (_, t_max) in enumerate(TENORS) if term <= t_max)
    ticket = next(n for n, (_, k_max) in enumerate(TICKETS) if principal <= k_max)
    return _cell_price(card, band, tenor, ticket)


class _Calendar:
    """The seeded window: three years of disbursements ending at `through`, growing over time."""

    def __init__(self, through: date) -> None:
        self.through = through.toordinal()
        self.start = (_add_months(through, -36) + timedelta(days=1)).toordinal()
        self.span = self.through - self.start + 1
        self.card_switch = _add_months(through, -18).toordinal()  # last day of the older card
        self.checkpoints = (self.through, _add_months(through, -6).toordinal())
        self.base = self.start - 400
        self.iso = [date.fromordinal(d).isoformat() for d in range(self.base, self.through + 800)]

    def day_at(self, fraction: float) -> int:
        """Disbursement day at a fraction of the portfolio; volume triples over the window."""
        return self.start + min(
            self.span - 1, int(self.span * (math.sqrt(1 + 8 * fraction) - 1) / 2)
        )

    def stamp(self, day: int, key: int) -> str:
        seconds = 28_800 + (key * 7_919) % 36_000  # business hours, UTC
        hour, minute, second = seconds // 3600, seconds // 60 % 60, seconds % 60
        return f"{self.iso[day - self.base]} {hour:02d}:{minute:02d}:{second:02d}+00"


class _Portfolio:
    """Generates customers, then loans with their schedules and payments, in order."""

    def __init__(self, rng: random.Random, cal: _Calendar, loans: int) -> None:
        self.rng, self.cal, self.loans = rng, cal, loans
        self.customers = max(5, round(loans / 60))
        self.cum_weight: list[float] = []
        self.band: list[int] = []
        self.company: list[str] = []
        self.ticket: list[tuple[float, float]] = []
        self.next_new = 0
        self.seq = {"ABT": 0, "ABF": 0}
        self.payments = self.installments = 0
        self.uncovered = {(day, b) for day in cal.checkpoints for b in range(1, len(DPD_BOUNDS))}

    def onboard_at(self, k: int) -> float:
        return k * self.loans * 0.95 / self.customers

    def customer_lines(self) -> list[str]:
        rng, cal, lines, total = self.rng, self.cal, [], 0.0
        for k in range(self.customers):
            name, _, median, sigma = SEGMENTS[bisect_right([s[1] for s in SEGMENTS], rng.random())]
            kind = "sole_proprietor" if rng.random() < SOLE_PROPRIETORS[name] else "company"
            city, state = rng.choice(PLACES)
            total += min(40.0, rng.paretovariate(1.5))
            self.cum_weight.append(total)
            self.band.append(bisect_right(BAND_MIX, rng.random()))
            self.company.append("ABT" if rng.random() < 0.68 else "ABF")
            self.ticket.append((math.log(median * 100) + rng.gauss(0, 0.35), sigma))
            day = cal.day_at(self.onboard_at(k) / self.loans) - rng.randint(1, 30)
            stamp = cal.stamp(day, k)
            industry = rng.choice(INDUSTRIES)
            lines.append(
                f"CUS-{k + 1:06d}\t{kind}\t{name}\t{industry}\t{city}\t{state}\tSLV\t"
                f"{stamp}\t{stamp}\n"
            )
        return lines

    def chunks(self, size: int) -> Iterator[tuple[list[str], list[str], list[str]]]:
        for first in range(0, self.loans, size):
            out: tuple[list[str], list[str], list[str]] = ([], [], [])
            for i in range(first, min(first + size, self.loans)):
                self._loan(i, *out)
            yield out

    def _customer_for(self, i: int) -> int:
        if self.next_new < self.customers and self.onboard_at(self.next_new) <= i:
            self.next_new += 1  # a customer's first loan
            return self.next_new - 1
        reach = self.cum_weight[self.next_new - 1]
        return bisect_right(self.cum_weight, self.rng.random() * reach, 0, self.next_new - 1)

    def _loan(self, i: int, loan_out: list[str], sched_out: list[str], pay_out: list[str]) -> None:
        rng, cal = self.rng, self.cal
        disb = cal.day_at((i + rng.random()) / self.loans)
        cust = self._customer_for(i)
        company = self.company[cust]
        company = company if rng.random() < 0.92 else OTHER_COMPANY[company]
        shift = rng.random()
        band = min(4, max(0, self.band[cust] + (-1 if shift < 0.08 else 1 if shift > 0.9 else 0)))
        parts = rng.randint(2, 4) if rng.random() < 0.03 else 1
        if parts > 1:
            term = rng.choice((60, 90, 120, 150, 180))
        else:
            pick = rng.random()
            term = next((t for t, c in TERMS if pick < c), 0) or rng.randint(10, 180)
        mu, sigma = self.ticket[cust]
        principal = min(25_000_000, max(30_000, int(rng.lognormvariate(mu, sigma))))
        card_apr, fee_rate = _price(0 if disb <= cal.card_switch else 1, band, term, principal)
        apr = max(120_000, card_apr + max(-20_000, min(20_000, int(rng.gauss(0, 6_000)))))
        interest = _half_up(principal * apr * term, 360_000_000)
        fee = _half_up(principal * fee_rate, 1_000_000)
        schedule = [
            (disb + round(term * n / parts), principal // parts, interest // parts)
            for n in range(1, parts)
        ]
        schedule.append((disb + term, principal - principal // parts * (parts - 1),
                         interest - interest // parts * (parts - 1)))  # fmt: skip
        pick = rng.random()
        outcome = next((o for o, c in enumerate(OUTCOMES[band]) if pick < c), DEFAULT)
        events, unpaid_due = self._payments(outcome, disb, term, schedule)
        if parts == 1 and self.uncovered:
            events = self._cover_buckets(schedule[0][0], principal, events)
        written_off = None
        if unpaid_due is not None and unpaid_due + 181 <= cal.through and rng.random() < 0.65:
            written_off = min(cal.through, unpaid_due + 181 + rng.randint(0, 90))
        events = sorted(e for e in events if e[0] <= cal.through)
        status = self._status(principal, schedule, events, written_off)
        seq = self.seq[company] = self.seq[company] + 1
        loan_id = f"{company}-{seq:07d}"
        iso = cal.iso
        last = max([disb, written_off or disb, *(e[0] for e in events)])
        loan_out.append(
            f"{loan_id}\tCUS-{cust + 1:06d}\t{company}\tfactoring\t{BANDS[band]}\tUSD\t"
            f"{iso[disb - cal.base]}\t{iso[disb + term - cal.base]}\t{term}\t{_money(principal)}\t"
            f"{_rate(apr)}\t{_money(fee)}\t{_money(_half_up(fee * 13, 100))}\t{status}\t"
            f"{iso[written_off - cal.base] if written_off else NULL}\t"
            f"{cal.stamp(disb, i)}\t{cal.stamp(last, i)}\n"
        )
        for n, (due, due_principal, due_interest) in enumerate(schedule, 1):
            sched_out.append(
                f"{loan_id}\t{n}\t{iso[due - cal.base]}\t{_money(due_principal)}\t"
                f"{_money(due_interest)}\t0.00\t0.00\t0.00\n"
            )
        self.installments += len(schedule)
        for day, *amounts in events:
            self.payments += 1
            stamp = cal.stamp(day, self.payments)
            money = "\t".join(map(_money, amounts))
            pay_out.append(
                f"PAY-{self.payments:08d}\t{loan_id}\t{iso[day - cal.base]}\t{money}\tUSD\t"
                f"{stamp}\t{stamp}\n"
            )

    def _payments(
        self, outcome: int, disb: int, term: int, schedule: list[Installment]
    ) -> tuple[list[Event], int | None]:
        """Every payment a loan will ever get; the due day of its first never-repaid installment."""
        events: list[Event] = []
        stop = self.rng.randrange(len(schedule)) if outcome == DEFAULT else 0  # paid until then
        for n, (due, principal, interest) in enumerate(schedule):
            kind = ON_TIME if n < stop else outcome
            repaid = self._installment(kind, disb, term, due, principal, interest, events)
            if not repaid:
                return events, due
        return events, None

    def _installment(self, kind: int, disb: int, term: int, due: int, principal: int, interest: int,
                     events: list[Event]) -> bool:  # fmt: skip
        rng = self.rng
        if kind == ON_TIME:
            events.append(self._event(due - rng.randint(0, 3), principal, interest, 0))
        elif kind == EARLY:
            paid = max(disb + 1, due - rng.randint(4, max(4, term - 1)))
            rebate = _half_up(interest * (due - paid), term) if rng.random() < 0.4 else 0
            events.append(self._event(paid, principal, interest, 0, rebate))
        elif kind == LATE:
            lag = 1 + min(169, int(rng.expovariate(1 / (12 if rng.random() < 0.85 else 55))))
            events.append(self._event(due + lag, principal, interest, lag))
        else:
            low, high, first_lag = {PARTIAL: (0.3, 0.8, rng.randint(-3, 15)),
                                    CURED: (0.2, 0.5, rng.randint(10, 60)),
                                    DEFAULT: (0.1, 0.3, rng.randint(0, 45))}[kind]  # fmt: skip
            part = int(principal * rng.uniform(low, high))
            part_interest = interest * part // principal
            if kind != DEFAULT or rng.random() < 0.3:
                events.append(
                    self._event(max(disb + 1, due + first_lag), part, part_interest, first_lag)
                )
            if kind == DEFAULT or (kind == PARTIAL and rng.random() < 0.4):
                return False
            lag = rng.randint(max(first_lag + 5, 61 if kind == CURED else 5), 170)
            events.append(self._event(due + lag, principal - part, interest - part_interest, lag))
        return True

    def _event(self, day: int, principal: int, interest: int, lag: int, rebate: int = 0) -> Event:
        rng = self.rng
        fee = (
            _half_up(principal * 5 * min(6, 1 + lag // 30), 1000)
            if lag > 10 and rng.random() < 0.3
            else 0
        )
        other = rng.randint(500, 5_000) if rng.random() < 0.02 else 0
        tax = _half_up(interest * 13, 100) if rng.random() < 0.01 else 0
        return (day, principal, interest, fee, other, tax, _half_up(fee * 13, 100), rebate)

    def _cover_buckets(self, due: int, principal: int, events: list[Event]) -> list[Event]:
        """Leave a bullet loan unpaid when a bucket at a checkpoint is still empty near its end."""
        keys = [(d, bisect_right(DPD_BOUNDS, d - due) - 1) for d in self.cal.checkpoints if due < d]
        unpaid = [k for k in keys if sum(e[1] for e in events if e[0] <= k[0]) < principal - 1]
        closing = [k for k in keys if k in self.uncovered and k[0] - due - DPD_BOUNDS[k[1]] < 7]
        if closing and not any(k in unpaid for k in closing):
            events, unpaid = [], keys
        self.uncovered.difference_update(unpaid)
        return events

    def _status(
        self,
        principal: int,
        schedule: list[Installment],
        events: list[Event],
        written_off: int | None,
    ) -> str:
        paid = sum(e[1] for e in events)
        if paid >= principal:
            return "complete"
        if written_off is not None:
            return "written_off"
        cumulative, through = 0, self.cal.through
        for due, due_principal, _ in schedule:
            cumulative += due_principal
            if due < through and cumulative > paid + 1:
                return "default" if through - due >= 90 else "current"
        return "current"


def _rate_card_lines(cal: _Calendar) -> list[str]:
    """Two successive cards (A-E x tenor x ticket grid plus the narrower overrides)."""
    switch = cal.iso[cal.card_switch - cal.base]
    cards = (
        (cal.iso[cal.start - 1 - cal.base], switch),
        (cal.iso[cal.card_switch + 1 - cal.base], NULL),
    )
    lines = []
    for card, (start, end) in enumerate(cards):
        cells = [
            (BANDS[b], *TENORS[t], *TICKETS[k], *_cell_price(card, b, t, k))
            for b in range(len(BANDS))
            for t in range(len(TENORS))
            for k in range(len(TICKETS))
        ]
        cells += [(*o[:5], o[5] + CARD_APR[card], o[6]) for o in OVERRIDES]
        for band, t_min, t_max, k_min, k_max, apr, fee in cells:
            lines.append(
                f"factoring\t{band}\t{t_min}\t{t_max}\t{_money(k_min)}\t{_money(k_max)}\t"
                f"{_rate(apr)}\t{_rate(fee)}\t{start}\t{end}\n"
            )
    return lines


def _copy(cur: psycopg.Cursor[Any], name: sql.Composable, role: str, lines: list[str]) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS[role]))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy:
        for start in range(0, len(lines), 2_000):
            copy.write("".join(lines[start : start + 2_000]))


def _prepare(
    cur: psycopg.Cursor[Any], tables: SourceTables, replace: bool
) -> dict[str, sql.Identifier]:
    """Qualified names of the five tables, which are empty (or emptied when `replace`)."""
    names = {role: sql.Identifier(*tables.split(role)) for role in ROLES}
    if replace:
        cur.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(names.values()))
        )
        return names
    probes = sql.SQL(", ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {})").format(n) for n in names.values()
    )
    row = cur.execute(sql.SQL("SELECT {}").format(probes)).fetchone()
    full = [
        str(getattr(tables, role))
        for role, has_rows in zip(ROLES, row or (), strict=True)
        if has_rows
    ]
    if full:
        raise UsageError(
            f"{', '.join(full)} already holds data; pass --replace to overwrite it",
            hint="`abaco db seed --replace` empties the five source tables before seeding.",
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

    Refuses tables that hold rows unless `replace`; commits on success.
    """
    if loans < 1:
        raise UsageError(f"--loans must be at least 1, got {loans}")
    report = progress or (lambda stage, done, total: None)
    cal = _Calendar(through)
    portfolio = _Portfolio(random.Random(seed), cal, loans)  # noqa: S311 (synthetic data, not secrets)
    with conn.cursor() as cur:
        names = _prepare(cur, tables, replace)
        cards = _rate_card_lines(cal)
        _copy(cur, names["rate_card"], "rate_card", cards)
        report("rate_card", len(cards), len(cards))
        _copy(cur, names["customers"], "customers", portfolio.customer_lines())
        report("customers", portfolio.customers, portfolio.customers)
        done = 0
        for loan_lines, schedule_lines, payment_lines in portfolio.chunks(CHUNK_LOANS):
            _copy(cur, names["loans"], "loans", loan_lines)
            _copy(cur, names["payment_schedule"], "payment_schedule", schedule_lines)
            _copy(cur, names["payments"], "payments", payment_lines)
            done += len(loan_lines)
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
