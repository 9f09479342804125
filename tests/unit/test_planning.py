"""Planning is pure: ranges, splits and predicates, checked without Spark or a server."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coldtier.config import CursorConfig
from coldtier.offset import CursorSpec, Offset
from coldtier.planning import Range, parse_plan_row, plan_query, predicate, split

TS_INC = CursorSpec("timestamp+incrementing", "exchange_timestamp", "sequence_number", 3)
TS_ONLY = CursorSpec("timestamp", "exchange_timestamp", None, 3)
INC_ONLY = CursorSpec("incrementing", None, "sequence_number", 0)

# Few distinct timestamps, so that many rows tie on the timestamp.
ts_inc = st.builds(Offset, st.integers(0, 5), st.integers(0, 40))


@settings(max_examples=300)
@given(lo=st.none() | ts_inc, hi=ts_inc, bounds=st.lists(ts_inc, max_size=8),
       rows=st.lists(ts_inc, max_size=60))
def test_split_is_disjoint_and_covers_the_range_exactly(lo, hi, bounds, rows):
    assume(lo is None or lo < hi)
    whole = Range(lo, hi)
    parts = split(whole, bounds)
    for r in rows:
        hits = sum(p.contains(r) for p in parts)
        assert hits == (1 if whole.contains(r) else 0)


@settings(max_examples=200)
@given(lo=st.none() | ts_inc, hi=ts_inc, rows=st.lists(ts_inc, max_size=60))
def test_consecutive_batches_never_lose_or_repeat_a_tie(lo, hi, rows):
    assume(lo is None or lo < hi)
    first, second = Range(None, lo) if lo else None, Range(lo, hi)
    for r in rows:
        in_first = first.contains(r) if first else False
        assert not (in_first and second.contains(r))
        if r <= hi:
            assert in_first or second.contains(r)


def test_predicate_has_tuple_comparison_and_pruning_bounds():
    sql = predicate(TS_INC, Range(Offset(1000, 7), Offset(2000, 9)))
    assert "(exchange_timestamp, sequence_number) > (fromUnixTimestamp64Milli(toInt64(1000), 'UTC'), 7)" in sql
    assert "(exchange_timestamp, sequence_number) <= (fromUnixTimestamp64Milli(toInt64(2000), 'UTC'), 9)" in sql
    assert "exchange_timestamp >= fromUnixTimestamp64Milli(toInt64(1000), 'UTC')" in sql
    assert "exchange_timestamp <= fromUnixTimestamp64Milli(toInt64(2000), 'UTC')" in sql


def test_first_batch_has_no_lower_bound():
    sql = predicate(TS_INC, Range(None, Offset(2000, 9)))
    assert ">" not in sql.replace(">=", "").replace("<=", "")


def test_other_modes_render_single_column_predicates():
    assert predicate(INC_ONLY, Range(Offset(None, 5), Offset(None, 9))) == \
        "sequence_number > 5 AND sequence_number <= 9"
    assert predicate(TS_ONLY, Range(None, Offset(7, None))) == \
        "exchange_timestamp <= fromUnixTimestamp64Milli(toInt64(7), 'UTC')"


def test_plan_query_applies_lag_on_the_servers_clock_and_the_row_cap():
    q = plan_query(TS_INC, "k2.t", Offset(1, 2), 3000, 300, 4)
    assert "now64(3, 'UTC') - toIntervalMillisecond(300000)" in q.sql
    assert "LIMIT 3000" in q.sql and "ORDER BY exchange_timestamp, sequence_number" in q.sql


def test_parse_plan_row_builds_partitions():
    row = {"n": 10, "last": ["50", "9"], "bounds": [["20", "3"], ["30", "5"], ["30", "5"]],
           "server_now_ms": 99}
    p = parse_plan_row(TS_INC, Offset(10, 1), row)
    assert p.rng == Range(Offset(10, 1), Offset(50, 9)) and p.rows == 10
    assert [r.hi for r in p.partitions] == [Offset(20, 3), Offset(30, 5), Offset(50, 9)]


def test_timestamp_mode_does_not_split_inside_the_end_timestamp():
    row = {"n": 4, "last": "50", "bounds": ["50"], "server_now_ms": 0}
    p = parse_plan_row(TS_ONLY, None, row)
    assert len(p.partitions) == 1


def test_cursor_types_are_checked():
    import pytest

    from coldtier.offset import CursorTypeError

    cfg = CursorConfig()
    spec = CursorSpec.resolve(cfg, {"exchange_timestamp": "DateTime64(3, 'UTC')",
                                    "sequence_number": "UInt64"}, "k2.t")
    assert spec.ts_scale == 3
    with pytest.raises(CursorTypeError, match="must be a non-Nullable DateTime"):
        CursorSpec.resolve(cfg, {"exchange_timestamp": "String", "sequence_number": "UInt64"}, "k2.t")
    with pytest.raises(CursorTypeError, match="does not exist"):
        CursorSpec.resolve(cfg, {"sequence_number": "UInt64"}, "k2.t")
    with pytest.raises(CursorTypeError, match="integer"):
        CursorSpec.resolve(cfg, {"exchange_timestamp": "DateTime", "sequence_number": "Float64"}, "k2.t")


@pytest.mark.parametrize(("engine_full", "expr"), [
    ("MergeTree ORDER BY a TTL toDateTime(ts) + toIntervalDay(30) SETTINGS index_granularity = 8192",
     "toDateTime(ts) + toIntervalDay(30)"),
    ("MergeTree ORDER BY a TTL toDateTime(ts) + toIntervalDay(30) DELETE WHERE side = 'a,b', "
     "toDateTime(ts) + toIntervalDay(60) SETTINGS index_granularity = 8192", "toDateTime(ts) + toIntervalDay(30)"),
    ("MergeTree ORDER BY a TTL toDateTime(ts) + toIntervalDay(1) TO VOLUME 'cold', "
     "dateAdd(day, 90, toDateTime(ts)) SETTINGS x = 1", "dateAdd(day, 90, toDateTime(ts))"),
    ("MergeTree ORDER BY a TTL toDateTime(ts) + INTERVAL 1 DAY TO DISK 'd' SETTINGS x = 1", None),
    ("MergeTree ORDER BY a SETTINGS index_granularity = 8192", None),
])
def test_ttl_delete_expression(engine_full, expr):
    from coldtier.source import ttl_delete_expression

    assert ttl_delete_expression(engine_full) == expr
