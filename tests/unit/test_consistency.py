"""The ledger-vs-sink decision every run makes before it plans, case by case."""

import pytest

from coldtier.consistency import AGED_UNKNOWN, Verdict, aged_out_vs_ledger, ledger_vs_sink
from coldtier.offset import Offset

A, B = Offset(1000, 7), Offset(2000, 9)


@pytest.mark.parametrize(("last_id", "watermark", "sunk_id", "sunk_end", "planned_id", "verdict"), [
    (0, None, 0, None, None, Verdict.CONSISTENT),  # a table never run
    (0, None, 0, None, 1, Verdict.CONSISTENT),  # batch 1 planned, nothing written yet
    (3, B, 3, B, None, Verdict.CONSISTENT),
    (3, B, 3, B, 4, Verdict.CONSISTENT),  # batch 4 planned, not in the sink: replay it
    (0, None, 1, A, 1, Verdict.CRASHED_BETWEEN_COMMITS),  # the first batch, crashed between commits
    (3, B, 4, A, 4, Verdict.CRASHED_BETWEEN_COMMITS),
    (3, B, 4, A, None, Verdict.LEDGER_BEHIND),  # the sink has a batch the ledger never planned
    (3, B, 5, A, 5, Verdict.LEDGER_BEHIND),  # two ahead: not one crash
    (3, B, 4, A, 5, Verdict.LEDGER_BEHIND),  # another batch planned than the one in the sink
    (0, None, 2, A, 2, Verdict.LEDGER_BEHIND),  # a lost ledger
    (3, B, 2, A, None, Verdict.LEDGER_AHEAD),  # the sink rolled back: running would skip rows
    (3, B, 0, None, None, Verdict.LEDGER_AHEAD),  # the sink was emptied or replaced
    (3, B, 3, A, None, Verdict.WATERMARK_DIFFERS),
])
def test_ledger_vs_sink(last_id, watermark, sunk_id, sunk_end, planned_id, verdict):
    assert ledger_vs_sink(last_id, watermark, sunk_id, sunk_end, planned_id) is verdict


def _never() -> bool:
    raise AssertionError("the table's rows were queried")


@pytest.mark.parametrize(("aged", "last_id", "rows", "agrees"), [
    (2, 2, _never, True),  # Delta's transaction record holds the ledger's last batch: no query
    (2, 1, _never, False),  # the record is ahead of the ledger
    (1, 2, _never, False),  # the ledger is ahead of the record
    (2, 0, _never, False),  # no ledger at all
    (AGED_UNKNOWN, 2, lambda: True, True),  # expired Iceberg history: one row at the watermark, none past
    (AGED_UNKNOWN, 2, lambda: False, False),  # a foreign row past it, or the watermark's row gone
    (AGED_UNKNOWN, 0, _never, False),  # no watermark to check the rows against
])
def test_aged_out_vs_ledger(aged, last_id, rows, agrees):
    """Batch commits gone by age: the sink's own record decides where there is one, the table's
    rows where there is none; the rows are queried only then, and only against a watermark."""
    check = aged_out_vs_ledger(aged, last_id, B if last_id else None, rows, "db.t", "how they left")
    assert check.agrees is agrees
    if aged == AGED_UNKNOWN:
        assert "watermark" in check.evidence and ("do not end" in check.evidence) is not agrees
    else:
        assert f"holds batch {aged}" in check.evidence and f"is {last_id or 'none'}" in check.evidence
