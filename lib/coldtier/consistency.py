"""Does the ledger agree with the sink? The decision every run makes before it plans (and
``TableRunner.verify`` turns into an error): pure, so every case is a row of a unit test.

The ledger says which batch was committed last and where it ended (its watermark); the sink says
which batch of this pipeline/table it holds last and the end cursor recorded with it. A batch
left ``planned`` in the ledger may already be in the sink: the run crashed between the sink's
commit and the ledger's, and recovery completes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from coldtier.offset import Offset

AGED_UNKNOWN = 0  # aged_out_batch: the batch commits may have left the lineage; which, unknown


class Verdict(Enum):
    CONSISTENT = "consistent"  # run
    CRASHED_BETWEEN_COMMITS = "crashed-between-commits"  # recover: the sink has the planned batch
    LEDGER_BEHIND = "ledger-behind"  # running would copy rows again
    LEDGER_AHEAD = "ledger-ahead"  # running would skip rows
    WATERMARK_DIFFERS = "watermark-differs"  # same batch, another end: which one is right?


def ledger_vs_sink(last_id: int, watermark: Offset | None, sunk_id: int, sunk_end: Offset | None,
                   planned_id: int | None) -> Verdict:
    """``last_id``/``watermark``: the ledger's last committed batch (0/None: none); ``sunk_id``/
    ``sunk_end``: the newest batch the sink holds for this pipeline/table (0/None: none);
    ``planned_id``: the batch the ledger holds as ``planned``, if any."""
    if sunk_id > last_id:
        if planned_id == sunk_id == last_id + 1:
            return Verdict.CRASHED_BETWEEN_COMMITS
        return Verdict.LEDGER_BEHIND
    if sunk_id < last_id:
        return Verdict.LEDGER_AHEAD
    if sunk_id and sunk_end != watermark:
        return Verdict.WATERMARK_DIFFERS
    return Verdict.CONSISTENT


@dataclass(frozen=True)
class AgedOut:
    """The ledger against a sink whose batch commits have left its lineage by age: whether what
    the sink still has confirms the ledger; for the message, how the commits left and what was
    compared."""

    agrees: bool
    gone: str
    evidence: str


def aged_out_vs_ledger(aged: int, last_id: int, watermark: Offset | None,
                       rows_end_at_watermark: Callable[[], bool], sink: str, how: str) -> AgedOut:
    """``aged``: what the sink's ``aged_out_batch`` said (not None). Where the sink's own record
    names its newest batch (Delta's transaction record), the ledger's last committed batch must
    be that one; where nothing does (``AGED_UNKNOWN``: expired Iceberg snapshots), the table's
    rows must end exactly at the ledger's watermark (``rows_end_at_watermark``, a query: asked
    only then, and only for a ledger that has a watermark). ``sink``, ``how``: the table and
    how its format loses batch commits by age (the sink's ``aged_out_how``)."""
    gone = f"the commits of this pipeline's batches have left {sink} ({how})"
    if aged == AGED_UNKNOWN:
        if last_id > 0 and rows_end_at_watermark():
            return AgedOut(True, gone, f"its rows end at the ledger's watermark {watermark}")
        return AgedOut(False, gone, f"its rows do not end at the ledger's watermark {watermark} "
                                    f"(batch {last_id or 'none'})")
    return AgedOut(aged == last_id, gone, f"its transaction record holds batch {aged}, the ledger's "
                                          f"last committed batch is {last_id or 'none'}")
