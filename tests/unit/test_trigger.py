"""The run's trigger and the lag it reports: pure functions."""

import pytest

from coldtier.driver import Trigger
from coldtier.loop import lag_behind


@pytest.mark.parametrize(("text", "seconds"), [
    ("processing-time=500ms", 0.5), ("processing-time=15s", 15), ("processing-time=2m", 120),
    ("processing-time=1h", 3600), ("processing-time=15 seconds", 15), ("processing-time=1 minute", 60),
    ("processing-time=250 milliseconds", 0.25), ("processing-time=2 hours", 7200),
    ("processing-time=1.5s", 1.5), ("processing-time=10 SECONDS", 10),
])
def test_processing_time_units(text, seconds):
    assert Trigger.parse(text) == Trigger("processing-time", seconds)


@pytest.mark.parametrize("text", [
    "processing-time=15", "processing-time=5d", "processing-time=1m30s", "processing-time=-1s",
    "processing-time=0s", "processing-time=", "processing-time=s", "processing-time=15 fortnights",
    "processing-time=1e3ms", "every-15s", "available_now",
])
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError, match="trigger"):
        Trigger.parse(text)


def test_once_and_available_now():
    assert Trigger.parse("once") == Trigger("once") and Trigger.parse("available-now") == Trigger("available-now")


def test_lag_is_zero_when_nothing_waits():
    assert lag_behind(7200.0, 0) == 0.0  # a quiet source: the watermark is old, the copy is not late
    assert lag_behind(7200.0, 5) == 7200.0
    assert lag_behind(7200.0, None) == 7200.0  # backlog unknown: the watermark's age
    assert lag_behind(None, 3) is None
