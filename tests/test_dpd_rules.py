"""The dpd dataset against docs/domain.md (days past due, write-off), worked out by hand.

Each test inserts a small hand-built portfolio into a fresh database, exports the dpd dataset
through the real service (``export_dataset``), reads the Parquet back and compares per-loan
values with numbers computed by hand in the comments. Nothing here calls the code under test
to compute an expectation.

Unless a test says otherwise the as-of date is D = 2024-06-30 and the default policy applies:
tolerance 0.01, write_off_after_days 180, default_threshold_days 90 (definitions version 2;
version 1 used 180), the seven default buckets.
Day counts back from D (June has 30 days, May 31, April 30, March 31, February 29 in 2024):
  D-1 = 06-29   D-10 = 06-20   D-30 = 05-31   D-31 = 05-30   D-45 = 05-16   D-60 = 05-01
  D-61 = 04-30  D-89 = 04-02   D-90 = 04-01   D-91 = 03-31   D-100 = 03-22  D-119 = 03-03
  D-120 = 03-02 D-121 = 03-01  D-179 = 01-03  D-180 = 01-02  D-181 = 01-01  D-200 = 2023-12-13
(e.g. D-180: 30 days back to 05-31, 61 to 04-30, 91 to 03-31, 120 to 03-02 ... 151 to 01-31,
180 to 01-02.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import DpdBucket, DpdPolicy, Settings
from portfolio import Portfolio
from tests.conftest import read_parquet_export

D = date(2024, 6, 30)
EARLY = date(2023, 12, 1)  # a disbursement date before every due date used below
FUTURE = date(2024, 7, 30)  # a due date after D: not due yet

MONEY = pa.decimal128(18, 2)
MONEY_COLUMNS = (
    "principal", "principal_paid", "outstanding", "past_due_amount", "written_off_balance",
)  # fmt: skip
DEFAULT_BUCKETS = [
    (0, "Current"), (1, "1-30"), (2, "31-60"), (3, "61-90"), (4, "91-120"), (5, "121-180"),
    (6, "180+"),
]  # fmt: skip

Row = dict[str, Any]


@dataclass
class DpdExport:
    loans: dict[str, Row]
    aging: list[Row]
    loans_table: pa.Table
    aging_table: pa.Table


def export_dpd(settings: Settings, as_of: date = D) -> DpdExport:
    """Run the real export and read both Parquet tables back."""
    result = export_dataset(settings, "dpd", as_of, ["parquet"])
    tables = {
        record.table: read_parquet_export(settings.exports_dir / record.path)
        for record in result.files
    }
    assert set(tables) == {"loans", "aging"}
    loans = {row["loan_id"]: row for row in tables["loans"].to_pylist()}
    assert len(loans) == tables["loans"].num_rows  # one row per loan
    for row in loans.values():
        assert row["as_of_date"] == as_of
    return DpdExport(loans, tables["aging"].to_pylist(), tables["loans"], tables["aging"])


def with_policy(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` whose DPD policy has ``changes`` (validated like configuration)."""
    merged = {**settings.dpd.model_dump(), **changes}
    return settings.model_copy(update={"dpd": DpdPolicy.model_validate(merged)})


def dec(text: str) -> Decimal:
    return Decimal(text)


# ---------------------------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------------------------

# (days past due, due date = D - days, bucket value, bucket label)
BOUNDARIES = [
    (0, FUTURE, 0, "Current"),  # not due yet
    (1, date(2024, 6, 29), 1, "1-30"),
    (30, date(2024, 5, 31), 1, "1-30"),
    (31, date(2024, 5, 30), 2, "31-60"),
    (60, date(2024, 5, 1), 2, "31-60"),
    (61, date(2024, 4, 30), 3, "61-90"),
    (90, date(2024, 4, 1), 3, "61-90"),
    (91, date(2024, 3, 31), 4, "91-120"),
    (120, date(2024, 3, 2), 4, "91-120"),
    (121, date(2024, 3, 1), 5, "121-180"),
    (180, date(2024, 1, 2), 5, "121-180"),
    (181, date(2024, 1, 1), 6, "180+"),
]


@pytest.mark.parametrize(
    ("days", "due", "bucket_value", "bucket"), BOUNDARIES, ids=[f"dpd{b[0]}" for b in BOUNDARIES]
)
def test_bucket_boundaries(
    db_conninfo: str, settings: Settings, days: int, due: date, bucket_value: int, bucket: str
) -> None:
    # One bullet loan of 1000.00, nothing paid, due on `due`.
    with Portfolio(db_conninfo) as book:
        book.loan("L1", disbursed=EARLY, principal="1000.00", schedule=[(due, "1000.00")])
    row = export_dpd(settings).loans["L1"]

    assert row["days_past_due"] == days
    assert row["dpd_bucket_value"] == bucket_value
    assert row["dpd_bucket"] == bucket
    assert row["principal"] == dec("1000.00")
    assert row["principal_paid"] == dec("0.00")
    if days == 0:
        # due after D: due(D) = 0, nothing late
        assert row["past_due_amount"] == dec("0.00")
        assert row["first_arrears_date"] is None
    else:
        # due(D) = 1000.00, paid 0 -> past due 1000.00; the only installment is the oldest unpaid
        assert row["past_due_amount"] == dec("1000.00")
        assert row["first_arrears_date"] == due
    if days > 180:
        # 181 > write_off_after_days 180: written off; the remaining principal moves out of
        # outstanding into written_off_balance (1000.00 - 0 paid)
        assert row["is_written_off"] is True
        assert row["outstanding"] == dec("0.00")
        assert row["written_off_balance"] == dec("1000.00")
        assert row["is_default"] is True
    else:
        # 180 is not more than 180: not written off
        assert row["is_written_off"] is False
        assert row["outstanding"] == dec("1000.00")
        assert row["written_off_balance"] == dec("0.00")
        # default threshold 90: dpd >= 90 is default (dpd 90 is, dpd 61 is not)
        assert row["is_default"] is (days >= 90)


def test_installment_due_on_as_of_date_is_not_late(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan("ON_D", disbursed=EARLY, principal="1000.00", schedule=[(D, "1000.00")])
        book.loan(
            "DAY_BEFORE",
            disbursed=EARLY,
            principal="1000.00",
            schedule=[(date(2024, 6, 29), "1000.00")],
        )
    loans = export_dpd(settings).loans

    on_d = loans["ON_D"]
    # due_date 06-30 is not < D 06-30: due(D) = 0 -> past due 0, dpd 0
    assert on_d["days_past_due"] == 0
    assert on_d["past_due_amount"] == dec("0.00")
    assert on_d["first_arrears_date"] is None
    assert on_d["dpd_bucket"] == "Current"
    assert on_d["outstanding"] == dec("1000.00")

    before = loans["DAY_BEFORE"]
    # due 06-29 < D: due(D) = 1000.00, past due 1000.00, dpd = 06-30 - 06-29 = 1
    assert before["days_past_due"] == 1
    assert before["past_due_amount"] == dec("1000.00")
    assert before["first_arrears_date"] == date(2024, 6, 29)
    assert before["dpd_bucket"] == "1-30"


# ---------------------------------------------------------------------------------------------
# Payments
# ---------------------------------------------------------------------------------------------


def test_partial_payment(db_conninfo: str, settings: Settings) -> None:
    # principal 1000.00 due 06-20; 400.00 paid on 06-10 (before due); D = 06-30
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 10), "400.00")],
        )
    row = export_dpd(settings).loans["L1"]

    assert row["principal_paid"] == dec("400.00")
    assert row["outstanding"] == dec("600.00")  # 1000.00 - 400.00
    assert row["past_due_amount"] == dec("600.00")  # due(D) 1000.00 - paid 400.00
    assert row["first_arrears_date"] == date(2024, 6, 20)  # 1000.00 > 400.00 + 0.01
    assert row["days_past_due"] == 10  # 06-30 - 06-20
    assert row["dpd_bucket"] == "1-30"
    assert row["last_payment_date"] == date(2024, 6, 10)
    assert row["is_default"] is False
    assert row["is_written_off"] is False
    assert row["written_off_balance"] == dec("0.00")


def test_early_payment_in_full(db_conninfo: str, settings: Settings) -> None:
    # principal 1000.00 due 06-20; paid 600.00 on 06-01 and 400.00 on 06-05, both before due
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 1), "600.00"), (date(2024, 6, 5), "400.00")],
        )
    row = export_dpd(settings).loans["L1"]

    assert row["principal_paid"] == dec("1000.00")  # 600.00 + 400.00
    assert row["outstanding"] == dec("0.00")  # max(1000.00 - 1000.00, 0)
    assert row["past_due_amount"] == dec("0.00")  # max(1000.00 - 1000.00, 0)
    assert row["days_past_due"] == 0
    assert row["first_arrears_date"] is None
    assert row["dpd_bucket"] == "Current"
    assert row["last_payment_date"] == date(2024, 6, 5)  # the later of the two payments
    assert row["is_default"] is False
    assert row["is_written_off"] is False


@pytest.mark.parametrize(
    ("as_of", "past_due", "dpd", "bucket", "last_due"),
    [
        # D after all three: due(D) = 300 + 300 + 300 = 900.00; past due 900.00 - 350.00 = 550.00;
        # dpd = 06-30 - 04-30 = 61 (30 days of June + 31 of May)
        (date(2024, 6, 30), "550.00", 61, "61-90", date(2024, 5, 31)),
        # D between the 2nd and 3rd: due(D) = 300 + 300 = 600.00; past due 600.00 - 350.00 =
        # 250.00; dpd = 05-15 - 04-30 = 15
        (date(2024, 5, 15), "250.00", 15, "1-30", date(2024, 4, 30)),
    ],
    ids=["after-all", "between-2nd-and-3rd"],
)
def test_several_installments_oldest_unpaid_decides(
    db_conninfo: str,
    settings: Settings,
    as_of: date,
    past_due: str,
    dpd: int,
    bucket: str,
    last_due: date,
) -> None:
    # 3 x 300.00 due 03-31, 04-30, 05-31; paid 300.00 on 03-31 and 50.00 on 04-25 (350.00).
    # Walk: cumulative 300.00 <= 350.00 + 0.01 (1st is paid); 600.00 > 350.01 -> the 2nd
    # installment (04-30) is the oldest unpaid one.
    # The installments are numbered against the calendar (no. 1 is due last) to show that the
    # walk follows due_date, not installment_no.
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 1, 15),
            principal="900.00",
            schedule=[
                (date(2024, 5, 31), "300.00"),
                (date(2024, 4, 30), "300.00"),
                (date(2024, 3, 31), "300.00"),
            ],
            payments=[(date(2024, 3, 31), "300.00"), (date(2024, 4, 25), "50.00")],
        )
    row = export_dpd(settings, as_of).loans["L1"]

    assert row["principal_paid"] == dec("350.00")
    assert row["outstanding"] == dec("550.00")  # 900.00 - 350.00 whatever D is
    assert row["past_due_amount"] == dec(past_due)
    assert row["first_arrears_date"] == date(2024, 4, 30)
    assert row["days_past_due"] == dpd
    assert row["dpd_bucket"] == bucket
    assert row["last_payment_date"] == date(2024, 4, 25)
    # last_due_date is not a rule of docs/domain.md; the implementation reports the latest
    # installment due on or before D.
    assert row["last_due_date"] == last_due


@pytest.mark.parametrize(
    ("paid", "past_due", "dpd", "arrears"),
    [
        # 1000.00 - 999.99 = 0.01 <= tolerance 0.01 -> counts as paid, dpd 0
        ("999.99", "0.01", 0, None),
        # 1000.00 - 999.98 = 0.02 > 0.01 -> late since 06-20: dpd 10
        ("999.98", "0.02", 10, date(2024, 6, 20)),
    ],
    ids=["short-0.01", "short-0.02"],
)
def test_tolerance(
    db_conninfo: str,
    settings: Settings,
    paid: str,
    past_due: str,
    dpd: int,
    arrears: date | None,
) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 20), paid)],
        )
    row = export_dpd(settings).loans["L1"]

    # past_due_amount is the plain max(due - paid, 0); only dpd is forgiven by the tolerance
    assert row["past_due_amount"] == dec(past_due)
    assert row["outstanding"] == dec(past_due)  # the whole loan was due: same remainder
    assert row["days_past_due"] == dpd
    assert row["first_arrears_date"] == arrears
    assert row["dpd_bucket"] == ("Current" if dpd == 0 else "1-30")


@pytest.mark.parametrize(
    ("tolerance", "paid", "dpd"),
    [
        ("0.00", "999.99", 10),  # short 0.01 > 0.00 -> late since 06-20: dpd 10
        ("5.00", "995.00", 0),  # short 5.00 <= 5.00 -> counts as paid
        ("5.00", "994.99", 10),  # short 5.01 > 5.00 -> late
    ],
    ids=["tol0-short0.01", "tol5-short5.00", "tol5-short5.01"],
)
def test_tolerance_is_configurable(
    db_conninfo: str, settings: Settings, tolerance: str, paid: str, dpd: int
) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 20), paid)],
        )
    row = export_dpd(with_policy(settings, tolerance=Decimal(tolerance))).loans["L1"]
    assert row["days_past_due"] == dpd


@pytest.mark.parametrize(
    ("as_of", "dpd", "outstanding", "is_default"),
    [
        # before the cure: nothing paid; dpd = 06-14 - 2023-12-31 = 31+29+31+30+31+14 = 166
        # >= 90 -> default (threshold 90 for this test), not > 180 so not written off
        (date(2024, 6, 14), 166, "1000.00", True),
        # after the cure (paid in full on 06-15): dpd 0, default gone
        (date(2024, 6, 30), 0, "0.00", False),
    ],
    ids=["before-cure", "after-cure"],
)
def test_cured_loan(
    db_conninfo: str,
    settings: Settings,
    as_of: date,
    dpd: int,
    outstanding: str,
    is_default: bool,
) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2023, 11, 1),
            principal="1000.00",
            schedule=[(date(2023, 12, 31), "1000.00")],
            payments=[(date(2024, 6, 15), "1000.00")],
        )
    row = export_dpd(with_policy(settings, default_threshold_days=90), as_of).loans["L1"]

    assert row["days_past_due"] == dpd
    assert row["outstanding"] == dec(outstanding)
    assert row["past_due_amount"] == dec(outstanding)  # the only installment is overdue
    assert row["is_default"] is is_default
    assert row["is_written_off"] is False


def test_payments_after_as_of_date_are_ignored(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        # 400.00 on 06-10 (counts), 600.00 on 07-05 (after D: does not exist yet)
        book.loan(
            "SPLIT",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 10), "400.00"), (date(2024, 7, 5), "600.00")],
        )
        # its only payment is on 07-01, the day after D
        book.loan(
            "LATER",
            disbursed=date(2024, 5, 1),
            principal="500.00",
            schedule=[(date(2024, 6, 20), "500.00")],
            payments=[(date(2024, 7, 1), "500.00")],
        )
        # paid in full ON D (06-30, end of day): that payment already counts
        book.loan(
            "ON_D",
            disbursed=date(2024, 5, 1),
            principal="500.00",
            schedule=[(date(2024, 6, 20), "500.00")],
            payments=[(D, "500.00")],
        )
    loans = export_dpd(settings).loans

    split = loans["SPLIT"]
    assert split["principal_paid"] == dec("400.00")
    assert split["outstanding"] == dec("600.00")  # 1000.00 - 400.00
    assert split["past_due_amount"] == dec("600.00")
    assert split["days_past_due"] == 10  # 06-30 - 06-20
    assert split["last_payment_date"] == date(2024, 6, 10)

    later = loans["LATER"]
    assert later["principal_paid"] == dec("0.00")
    assert later["outstanding"] == dec("500.00")
    assert later["past_due_amount"] == dec("500.00")
    assert later["days_past_due"] == 10
    assert later["last_payment_date"] is None

    on_d = loans["ON_D"]
    assert on_d["principal_paid"] == dec("500.00")
    assert on_d["outstanding"] == dec("0.00")
    assert on_d["past_due_amount"] == dec("0.00")
    assert on_d["days_past_due"] == 0
    assert on_d["last_payment_date"] == D

    # the same data as of 07-10: both loans fully paid, dpd 0
    after = export_dpd(settings, date(2024, 7, 10)).loans
    assert after["SPLIT"]["principal_paid"] == dec("1000.00")  # 400.00 + 600.00
    assert after["SPLIT"]["outstanding"] == dec("0.00")
    assert after["SPLIT"]["days_past_due"] == 0
    assert after["SPLIT"]["last_payment_date"] == date(2024, 7, 5)
    assert after["LATER"]["principal_paid"] == dec("500.00")
    assert after["LATER"]["days_past_due"] == 0
    assert after["LATER"]["last_payment_date"] == date(2024, 7, 1)


# ---------------------------------------------------------------------------------------------
# Scope and write-off
# ---------------------------------------------------------------------------------------------


def test_scope_is_disbursed_on_or_before_as_of_date(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan(
            "BEFORE", disbursed=date(2024, 6, 29), principal="100.00", schedule=[(FUTURE, "100.00")]
        )
        book.loan("ON_D", disbursed=D, principal="200.00", schedule=[(FUTURE, "200.00")])
        book.loan(
            "AFTER", disbursed=date(2024, 7, 1), principal="300.00", schedule=[(FUTURE, "300.00")]
        )
    export = export_dpd(settings)

    assert sorted(export.loans) == ["BEFORE", "ON_D"]  # 07-01 > D: no row
    on_d = export.loans["ON_D"]
    assert on_d["disbursement_date"] == D
    assert on_d["principal"] == dec("200.00")
    assert on_d["outstanding"] == dec("200.00")
    assert on_d["days_past_due"] == 0
    # the aging only sees the two in-scope loans: 100.00 + 200.00 = 300.00 in Current
    current = export.aging[0]
    assert (current["loans"], current["outstanding"]) == (2, dec("300.00"))


def test_write_off_by_days(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        # due 2024-01-01 -> dpd 181 > 180; 250.00 of 1000.00 paid (after due, before D)
        book.loan(
            "L181",
            disbursed=EARLY,
            principal="1000.00",
            schedule=[(date(2024, 1, 1), "1000.00")],
            payments=[(date(2024, 2, 15), "250.00")],
        )
        # due 2024-01-02 -> dpd 180: not more than 180, stays on the books
        book.loan(
            "L180",
            disbursed=EARLY,
            principal="1000.00",
            schedule=[(date(2024, 1, 2), "1000.00")],
            payments=[(date(2024, 2, 15), "250.00")],
        )
    loans = export_dpd(settings).loans

    off = loans["L181"]
    assert off["days_past_due"] == 181
    assert off["is_written_off"] is True
    assert off["outstanding"] == dec("0.00")
    assert off["written_off_balance"] == dec("750.00")  # 1000.00 - 250.00
    assert off["principal_paid"] == dec("250.00")
    assert off["past_due_amount"] == dec("750.00")
    assert off["is_default"] is True
    assert off["dpd_bucket"] == "180+"

    kept = loans["L180"]
    assert kept["days_past_due"] == 180
    assert kept["is_written_off"] is False
    assert kept["outstanding"] == dec("750.00")
    assert kept["written_off_balance"] == dec("0.00")
    assert kept["is_default"] is True  # 180 >= default threshold 90


@pytest.mark.parametrize(
    ("written_off_date", "due", "dpd", "written_off"),
    [
        (date(2024, 6, 30), FUTURE, 0, True),  # written_off_date = D, not even due yet
        (date(2024, 6, 15), date(2024, 6, 20), 10, True),  # before D, low dpd
        (date(2024, 7, 1), date(2024, 6, 20), 10, False),  # after D: not written off yet
    ],
    ids=["on-D", "before-D", "after-D"],
)
def test_write_off_by_date(
    db_conninfo: str,
    settings: Settings,
    written_off_date: date,
    due: date,
    dpd: int,
    written_off: bool,
) -> None:
    # principal 800.00, 300.00 paid on 06-01 -> 500.00 remaining
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="800.00",
            schedule=[(due, "800.00")],
            payments=[(date(2024, 6, 1), "300.00")],
            written_off_date=written_off_date,
        )
    row = export_dpd(settings).loans["L1"]

    assert row["days_past_due"] == dpd
    assert row["is_written_off"] is written_off
    if written_off:
        assert row["outstanding"] == dec("0.00")
        assert row["written_off_balance"] == dec("500.00")  # 800.00 - 300.00
        assert row["is_default"] is True  # written off counts as default
    else:
        assert row["outstanding"] == dec("500.00")
        assert row["written_off_balance"] == dec("0.00")
        assert row["is_default"] is False  # dpd 10 < 90


# ---------------------------------------------------------------------------------------------
# Default threshold
# ---------------------------------------------------------------------------------------------

# (loan id, due date); dpd = D - due
THRESHOLD_LOANS = [
    ("DPD089", date(2024, 4, 2)),
    ("DPD090", date(2024, 4, 1)),
    ("DPD119", date(2024, 3, 3)),
    ("DPD120", date(2024, 3, 2)),
    ("DPD179", date(2024, 1, 3)),
    ("DPD180", date(2024, 1, 2)),
]


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # is_default = dpd >= threshold, for the loans at dpd 89, 90, 119, 120, 179, 180
        (90, (False, True, True, True, True, True)),
        (120, (False, False, False, True, True, True)),
        (180, (False, False, False, False, False, True)),
    ],
    ids=["90", "120", "180"],
)
def test_default_threshold(
    db_conninfo: str, settings: Settings, threshold: int, expected: tuple[bool, ...]
) -> None:
    with Portfolio(db_conninfo) as book:
        for loan_id, due in THRESHOLD_LOANS:
            book.loan(loan_id, disbursed=EARLY, principal="100.00", schedule=[(due, "100.00")])
    custom = settings.model_copy(
        update={"dpd": settings.dpd.model_copy(update={"default_threshold_days": threshold})}
    )
    loans = export_dpd(custom).loans

    assert {k: r["days_past_due"] for k, r in loans.items()} == {
        "DPD089": 89,
        "DPD090": 90,
        "DPD119": 119,
        "DPD120": 120,
        "DPD179": 179,
        "DPD180": 180,
    }
    assert tuple(loans[loan_id]["is_default"] for loan_id, _ in THRESHOLD_LOANS) == expected
    assert not any(r["is_written_off"] for r in loans.values())  # all <= 180


# ---------------------------------------------------------------------------------------------
# Aging summary
# ---------------------------------------------------------------------------------------------


def test_aging_summary(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        # L1 C1: current, 1000.00 - 300.00 paid = 700.00 outstanding, nothing past due
        book.loan(
            "L1",
            customer_id="C1",
            disbursed=EARLY,
            principal="1000.00",
            schedule=[(FUTURE, "1000.00")],
            payments=[(date(2024, 6, 1), "300.00")],
        )
        # L2 C1: dpd 10 (due 06-20), 500.00 unpaid
        book.loan(
            "L2",
            customer_id="C1",
            disbursed=EARLY,
            principal="500.00",
            schedule=[(date(2024, 6, 20), "500.00")],
        )
        # L3 C2: dpd 10, 300.00 - 100.00 = 200.00
        book.loan(
            "L3",
            customer_id="C2",
            disbursed=EARLY,
            principal="300.00",
            schedule=[(date(2024, 6, 20), "300.00")],
            payments=[(date(2024, 6, 1), "100.00")],
        )
        # L9 C2: dpd 30 (due 05-31), 100.00 unpaid
        book.loan(
            "L9",
            customer_id="C2",
            disbursed=EARLY,
            principal="100.00",
            schedule=[(date(2024, 5, 31), "100.00")],
        )
        # L4 C2: dpd 45 (due 05-16), 250.50 unpaid
        book.loan(
            "L4",
            customer_id="C2",
            disbursed=EARLY,
            principal="250.50",
            schedule=[(date(2024, 5, 16), "250.50")],
        )
        # L8 C4: dpd 100 (due 03-22), 249.50 unpaid
        book.loan(
            "L8",
            customer_id="C4",
            disbursed=EARLY,
            principal="249.50",
            schedule=[(date(2024, 3, 22), "249.50")],
        )
        # excluded from the aging:
        # L5 C3: dpd 200 (due 2023-12-13) > 180 -> written off
        book.loan(
            "L5",
            customer_id="C3",
            disbursed=date(2023, 11, 1),
            principal="700.00",
            schedule=[(date(2023, 12, 13), "700.00")],
        )
        # L6 C3: fully repaid -> outstanding 0
        book.loan(
            "L6",
            customer_id="C3",
            disbursed=EARLY,
            principal="400.00",
            schedule=[(date(2024, 6, 20), "400.00")],
            payments=[(date(2024, 6, 18), "400.00")],
        )
        # L7 C3: written off by date 06-01 while current
        book.loan(
            "L7",
            customer_id="C3",
            disbursed=EARLY,
            principal="600.00",
            schedule=[(FUTURE, "600.00")],
            written_off_date=date(2024, 6, 1),
        )
    export = export_dpd(settings)
    assert len(export.loans) == 9  # every loan is in the loan table

    # Active outstanding: 700.00 + 500.00 + 200.00 + 100.00 + 250.50 + 249.50 = 2000.00
    # bucket 0: L1               -> 1 loan, C1,      700.00, past due   0.00, 700/2000 = 0.35
    # bucket 1: L2, L3, L9       -> 3 loans, C1 C2,  500+200+100 = 800.00, past due 800.00, 0.40
    # bucket 2: L4               -> 1 loan, C2,      250.50, past due 250.50, 250.50/2000 = 0.12525
    # bucket 4: L8               -> 1 loan, C4,      249.50, past due 249.50, 249.50/2000 = 0.12475
    # buckets 3, 5, 6: empty (L5 would be in 6 but it is written off)
    expected = [
        (0, "Current", 1, 1, "700.00", "0.00", 0.35),
        (1, "1-30", 3, 2, "800.00", "800.00", 0.40),
        (2, "31-60", 1, 1, "250.50", "250.50", 0.12525),
        (3, "61-90", 0, 0, "0.00", "0.00", 0.0),
        (4, "91-120", 1, 1, "249.50", "249.50", 0.12475),
        (5, "121-180", 0, 0, "0.00", "0.00", 0.0),
        (6, "180+", 0, 0, "0.00", "0.00", 0.0),
    ]
    assert len(export.aging) == 7
    for row, (value, label, loans, customers, outstanding, past_due, share) in zip(
        export.aging, expected, strict=True
    ):
        assert row["as_of_date"] == D
        assert (row["dpd_bucket_value"], row["dpd_bucket"]) == (value, label)
        assert row["loans"] == loans, label
        assert row["customers"] == customers, label
        assert row["outstanding"] == dec(outstanding), label
        assert row["past_due_amount"] == dec(past_due), label
        assert row["share_of_outstanding"] == pytest.approx(
            Decimal(repr(share)), abs=Decimal("1E-10")
        ), label
        assert row["description"]  # the policy's description travels with the bucket
    assert export.aging_table.schema.field("outstanding").type == MONEY
    assert export.aging_table.schema.field("past_due_amount").type == MONEY


def test_aging_of_an_empty_portfolio_lists_every_bucket(settings: Settings) -> None:
    export = export_dpd(settings)
    assert export.loans == {}
    assert [(r["dpd_bucket_value"], r["dpd_bucket"]) for r in export.aging] == DEFAULT_BUCKETS
    for row in export.aging:
        assert (row["loans"], row["customers"]) == (0, 0)
        assert row["outstanding"] == dec("0.00")
        assert row["past_due_amount"] == dec("0.00")
        # total outstanding is 0: a ratio over zero is null (docs/domain.md)
        assert row["share_of_outstanding"] is None


# ---------------------------------------------------------------------------------------------
# Custom bucket policy
# ---------------------------------------------------------------------------------------------


def test_custom_bucket_policy(db_conninfo: str, settings: Settings) -> None:
    buckets = [
        DpdBucket(value=0, label="Current", min_days=0, max_days=0, description="on time"),
        DpdBucket(value=1, label="1-90", min_days=1, max_days=90, description="early arrears"),
        DpdBucket(value=2, label="91+", min_days=91, max_days=None, description="late arrears"),
    ]
    custom = settings.model_copy(update={"dpd": DpdPolicy(buckets=buckets)})
    with Portfolio(db_conninfo) as book:
        book.loan("DPD000", disbursed=EARLY, principal="100.00", schedule=[(FUTURE, "100.00")])
        book.loan(
            "DPD001", disbursed=EARLY, principal="200.00", schedule=[(date(2024, 6, 29), "200.00")]
        )
        book.loan(
            "DPD090", disbursed=EARLY, principal="300.00", schedule=[(date(2024, 4, 1), "300.00")]
        )
        book.loan(
            "DPD091", disbursed=EARLY, principal="400.00", schedule=[(date(2024, 3, 31), "400.00")]
        )
        book.loan(
            "DPD181", disbursed=EARLY, principal="500.00", schedule=[(date(2024, 1, 1), "500.00")]
        )
    export = export_dpd(custom)

    assert {
        k: (r["days_past_due"], r["dpd_bucket_value"], r["dpd_bucket"])
        for k, r in export.loans.items()
    } == {
        "DPD000": (0, 0, "Current"),
        "DPD001": (1, 1, "1-90"),
        "DPD090": (90, 1, "1-90"),
        "DPD091": (91, 2, "91+"),
        "DPD181": (181, 2, "91+"),  # written off (181 > 180) but still bucketed
    }
    # aging: active outstanding 100 + 200 + 300 + 400 = 1000.00 (DPD181 is written off)
    #   Current: 100.00 (0.1); 1-90: 200 + 300 = 500.00 (0.5); 91+: 400.00 (0.4)
    summary = [
        (r["dpd_bucket_value"], r["dpd_bucket"], r["description"], r["loans"], r["outstanding"])
        for r in export.aging
    ]
    assert summary == [
        (0, "Current", "on time", 1, dec("100.00")),
        (1, "1-90", "early arrears", 2, dec("500.00")),
        (2, "91+", "late arrears", 1, dec("400.00")),
    ]
    shares = [r["share_of_outstanding"] for r in export.aging]
    assert shares == [Decimal("0.1"), Decimal("0.5"), Decimal("0.4")]


# ---------------------------------------------------------------------------------------------
# Output shape
# ---------------------------------------------------------------------------------------------


def test_money_is_exact_decimal(db_conninfo: str, settings: Settings) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan(
            "L1",
            disbursed=date(2024, 5, 1),
            principal="1234.56",
            schedule=[(date(2024, 6, 20), "1234.56")],
            payments=[(date(2024, 6, 10), "0.07")],
        )
    export = export_dpd(settings)
    for name in MONEY_COLUMNS:
        assert export.loans_table.schema.field(name).type == MONEY, name
    row = export.loans["L1"]
    assert row["outstanding"] == dec("1234.49")  # 1234.56 - 0.07, no float rounding
    assert str(row["outstanding"]) == "1234.49"
    assert row["past_due_amount"] == dec("1234.49")


def test_single_bucket_policy(db_conninfo: str, settings: Settings) -> None:
    # The smallest valid policy: one open-ended bucket from 0 days; every loan lands in it.
    buckets = [DpdBucket(value=0, label="All", min_days=0, max_days=None, description="all")]
    custom = settings.model_copy(update={"dpd": DpdPolicy(buckets=buckets)})
    with Portfolio(db_conninfo) as book:
        book.loan("DPD000", disbursed=EARLY, principal="100.00", schedule=[(FUTURE, "100.00")])
        book.loan(
            "DPD045", disbursed=EARLY, principal="300.00", schedule=[(date(2024, 5, 16), "300.00")]
        )
    export = export_dpd(custom)

    assert {
        k: (r["days_past_due"], r["dpd_bucket_value"], r["dpd_bucket"])
        for k, r in export.loans.items()
    } == {
        "DPD000": (0, 0, "All"),
        "DPD045": (45, 0, "All"),  # due 05-16: 06-30 - 05-16 = 45
    }
    # one aging row: 2 loans, 100.00 + 300.00 = 400.00, share 1.0
    [row] = export.aging
    assert (row["dpd_bucket"], row["loans"], row["outstanding"]) == ("All", 2, dec("400.00"))
    assert row["past_due_amount"] == dec("300.00")
    assert row["share_of_outstanding"] == Decimal(1)


# ---------------------------------------------------------------------------------------------
# Write-off once, frozen; recoveries; settled cents (definitions version 2)
# ---------------------------------------------------------------------------------------------
# Day counts used below: 2023-11-01 + 181 days = 2024-04-30 (29 days to 11-30, 60 to 12-31, 91
# to 01-31, 120 to 02-29, 151 to 03-31, 181 to 04-30); 2023-12-01 + 181 = 2024-05-30 (30 to
# 12-31, 61 to 01-31, 90 to 02-29, 121 to 03-31, 151 to 04-30, 181 to 05-30); 2024-01-01 + 181
# = 2024-06-30 (D). A payment given as (date, amount) also carries interest 5.00 (portfolio.py).


def v2_book(conninfo: str) -> None:
    with Portfolio(conninfo) as book:
        # LATE200: 1,000 due 2023-11-01, repaid in full 200 days late on 2024-05-19
        # (29 + 31 + 31 + 29 + 31 + 30 + 19 = 200)
        book.loan(
            "LATE200",
            disbursed=date(2023, 10, 1),
            principal="1000.00",
            schedule=[(date(2023, 11, 1), "1000.00")],
            payments=[(date(2024, 5, 19), "1000.00")],
        )
        # WO_DAY: 200 paid 2024-01-15; 300 paid on 2024-04-30, the day it is written off
        book.loan(
            "WO_DAY",
            disbursed=date(2023, 10, 1),
            principal="1000.00",
            schedule=[(date(2023, 11, 1), "1000.00")],
            payments=[(date(2024, 1, 15), "200.00"), (date(2024, 4, 30), "300.00")],
        )
        # BYDATE: due 2024-03-31 (91 days late at D), written_off_date 2024-05-15; 100 paid
        # 05-10 (before), 50 paid 06-10 (a recovery)
        book.loan(
            "BYDATE",
            disbursed=date(2024, 1, 1),
            principal="1000.00",
            schedule=[(date(2024, 3, 31), "1000.00")],
            written_off_date=date(2024, 5, 15),
            payments=[(date(2024, 5, 10), "100.00"), (date(2024, 6, 10), "50.00")],
        )
        # LATEDATE: due 2023-11-01, nothing paid, written_off_date 2024-06-15 (after the day
        # days past due exceeded 180, 2024-04-30: the earlier date wins)
        book.loan(
            "LATEDATE",
            disbursed=date(2023, 10, 1),
            principal="1000.00",
            schedule=[(date(2023, 11, 1), "1000.00")],
            written_off_date=date(2024, 6, 15),
        )
        # MULTI: 3 x 300 due 2023-11-01, 12-01, 2024-01-01; 300 paid 2023-11-01, 300 paid
        # 2024-05-20: the second installment is paid before its day 181 (05-30), the third is
        # unpaid 181 days after its due date on D itself
        book.loan(
            "MULTI",
            disbursed=date(2023, 10, 1),
            principal="900.00",
            schedule=[
                (date(2023, 11, 1), "300.00"),
                (date(2023, 12, 1), "300.00"),
                (date(2024, 1, 1), "300.00"),
            ],
            payments=[(date(2023, 11, 1), "300.00"), (date(2024, 5, 20), "300.00")],
        )
        # MULTI_LATE: the same, its second 300 paid on 2024-06-05 instead: written off on
        # 2024-05-30, when the 12-01 installment is 181 days late
        book.loan(
            "MULTI_LATE",
            disbursed=date(2023, 10, 1),
            principal="900.00",
            schedule=[
                (date(2023, 11, 1), "300.00"),
                (date(2023, 12, 1), "300.00"),
                (date(2024, 1, 1), "300.00"),
            ],
            payments=[(date(2023, 11, 1), "300.00"), (date(2024, 6, 5), "300.00")],
        )
        # CENTS: 1,000 due 06-20, 999.99 paid that day: 0.01 left, settled
        book.loan(
            "CENTS",
            disbursed=date(2024, 5, 1),
            principal="1000.00",
            schedule=[(date(2024, 6, 20), "1000.00")],
            payments=[(date(2024, 6, 20), "999.99")],
        )
        # OPEN: 500 current (due after D), the only active loan besides none of the above
        book.loan(
            "OPEN", disbursed=date(2024, 6, 1), principal="500.00", schedule=[(FUTURE, "500.00")]
        )


# loan: (write_off_date, gross_write_off, recoveries, principal_recovered, principal_paid,
#        outstanding, written_off_balance, days_past_due) at D = 2024-06-30
V2_AT_D: dict[str, tuple[date | None, str, str, str, str, str, str, int]] = {
    # written off 2024-04-30 (dpd 181, nothing paid by then): gross 1,000 - 0; the 200-days-late
    # payment is a recovery: cash 1,000 + 5 interest, principal 1,000; nothing owed, dpd 0, and
    # it stays written off (version 1 would have cured it)
    "LATE200": (date(2024, 4, 30), "1000.00", "1005.00", "1000.00", "1000.00", "0.00", "0.00", 0),
    # written off 2024-04-30; gross = 1,000 - 200 paid by 04-29 = 800; the payment of 04-30 is
    # on the write-off date: a recovery of 300 + 5; written_off_balance 1,000 - 500 = 500;
    # dpd 2024-06-30 - 2023-11-01 = 242 (181 to 04-30, + 30 + 31)
    "WO_DAY": (date(2024, 4, 30), "800.00", "305.00", "300.00", "500.00", "0.00", "500.00", 242),
    # written off 2024-05-15 by date; gross 1,000 - 100 = 900; recovery 50 + 5; dpd 91
    "BYDATE": (date(2024, 5, 15), "900.00", "55.00", "50.00", "150.00", "0.00", "850.00", 91),
    # the earlier of 2024-06-15 (date) and 2024-04-30 (days); gross 1,000; dpd 242
    "LATEDATE": (date(2024, 4, 30), "1000.00", "0.00", "0.00", "0.00", "0.00", "1000.00", 242),
    # walk at D: cumulative 300 <= 600.01, 600 <= 600.01, 900 > 600.01: oldest unpaid is due
    # 2024-01-01, dpd 181 > 180 on D: written off on D; gross = 900 - 600 paid by 06-29 = 300
    "MULTI": (D, "300.00", "0.00", "0.00", "600.00", "0.00", "300.00", 181),
    # written off 2024-05-30 (the 12-01 installment: 600 due > 300 paid + 0.01 on day 181);
    # gross 900 - 300 = 600; the 06-05 payment recovers 300 + 5; dpd at D 181 (01-01)
    "MULTI_LATE": (
        date(2024, 5, 30),
        "600.00",
        "305.00",
        "300.00",
        "600.00",
        "0.00",
        "300.00",
        181,
    ),
    # not written off: the cent stays visible in dpd/loans
    "CENTS": (None, "0.00", "0.00", "0.00", "999.99", "0.01", "0.00", 0),
    "OPEN": (None, "0.00", "0.00", "0.00", "0.00", "500.00", "0.00", 0),
}


def test_write_off_is_frozen_with_recoveries(db_conninfo: str, settings: Settings) -> None:
    v2_book(db_conninfo)
    loans = export_dpd(settings).loans
    for loan_id, expected in V2_AT_D.items():
        wod, gross, recoveries, recovered, paid, outstanding, balance, dpd = expected
        row = loans[loan_id]
        assert row["write_off_date"] == wod, loan_id
        assert row["is_written_off"] is (wod is not None), loan_id
        assert row["gross_write_off"] == dec(gross), loan_id
        assert row["recoveries"] == dec(recoveries), loan_id
        assert row["principal_recovered"] == dec(recovered), loan_id
        assert row["principal_paid"] == dec(paid), loan_id
        assert row["outstanding"] == dec(outstanding), loan_id
        assert row["written_off_balance"] == dec(balance), loan_id
        assert row["days_past_due"] == dpd, loan_id
        # written off counts as default; otherwise dpd >= 90
        assert row["is_default"] is (wod is not None or dpd >= 90), loan_id
        # principal = principal paid - principal recovered + gross write-off + outstanding
        assert row["principal"] == (
            row["principal_paid"] - row["principal_recovered"] + row["gross_write_off"]
            + row["outstanding"]
        ), loan_id  # fmt: skip
    # LATE200 repaid: nothing past due, but written off for good
    assert loans["LATE200"]["dpd_bucket"] == "Current"
    assert loans["LATE200"]["past_due_amount"] == dec("0.00")


@pytest.mark.parametrize(
    ("as_of", "written_off", "gross", "recoveries", "dpd"),
    [
        # 180 days late: not yet (180 is not more than 180), default (>= 90)
        (date(2024, 4, 29), False, "0.00", "0.00", 180),
        # day 181: written off with 1,000 outstanding at the end of 04-29
        (date(2024, 4, 30), True, "1000.00", "0.00", 181),
        # repaid 05-19: still written off, the same gross, the payment a recovery
        (date(2024, 5, 19), True, "1000.00", "1005.00", 0),
        (date(2024, 12, 31), True, "1000.00", "1005.00", 0),
    ],
    ids=["day-180", "day-181", "repaid", "later"],
)
def test_a_late_repayment_never_restates_the_write_off(
    db_conninfo: str,
    settings: Settings,
    as_of: date,
    written_off: bool,
    gross: str,
    recoveries: str,
    dpd: int,
) -> None:
    v2_book(db_conninfo)
    row = export_dpd(settings, as_of).loans["LATE200"]
    assert row["is_written_off"] is written_off
    assert row["write_off_date"] == (date(2024, 4, 30) if written_off else None)
    assert row["gross_write_off"] == dec(gross)
    assert row["recoveries"] == dec(recoveries)
    assert row["days_past_due"] == dpd
    assert row["is_default"] is True  # 180 >= 90, or written off


def test_multi_installment_write_off_the_day_before(db_conninfo: str, settings: Settings) -> None:
    v2_book(db_conninfo)
    # at 06-29 MULTI's oldest unpaid installment (01-01) is 180 days late: not written off
    row = export_dpd(settings, date(2024, 6, 29)).loans["MULTI"]
    assert (row["days_past_due"], row["is_written_off"], row["write_off_date"]) == (
        180,
        False,
        None,
    )
    assert row["outstanding"] == dec("300.00")  # 900 - 600


def test_settled_cents_are_not_active(db_conninfo: str, settings: Settings) -> None:
    v2_book(db_conninfo)
    export = export_dpd(settings)
    # CENTS keeps its 0.01 in dpd/loans, but the aging counts only OPEN (500.00, Current): a
    # balance at or below the tolerance is settled; the written-off loans are out as well
    assert export.loans["CENTS"]["outstanding"] == dec("0.01")
    current = export.aging[0]
    assert (current["loans"], current["customers"], current["outstanding"]) == (1, 1, dec("500.00"))
    assert sum(r["loans"] for r in export.aging) == 1
    assert export.aging[0]["share_of_outstanding"] == Decimal(1)


def test_new_columns_and_schema_version(db_conninfo: str, settings: Settings) -> None:
    v2_book(db_conninfo)
    result = export_dataset(settings, "dpd", D, ["parquet"])
    table = next(
        read_parquet_export(settings.exports_dir / r.path)
        for r in result.files
        if r.table == "loans"
    )
    for name in ("gross_write_off", "recoveries", "principal_recovered"):
        assert table.schema.field(name).type == MONEY, name
    assert table.schema.field("write_off_date").type == pa.date32()
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["schema_version"] == 2  # columns added: dpd's schema version 2
