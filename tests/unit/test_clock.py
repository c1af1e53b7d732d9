"""The simulated clock's pure parts: the tick plan, the time encoding in Redis, the lockstep rule, what a
waiting check reports, and the demo pace after a pause.

A wrong tick plan skips or repeats simulated time (so the world's events change); a wrong lockstep rule
either stalls a fast run or lets the clock run ahead of a consumer, which then sees the future; a clock that
made up a pause would rush the store through the paused time in a burst.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartshelf.apps.clock_service import next_step_due, offset_lags, tick_lags
from smartshelf.clock import ClockPlan, behind_offsets, behind_ticks, decode_time, encode_time, partition_field

START = datetime(2025, 1, 1, 8)
PLAN = ClockPlan(start=START, step=timedelta(minutes=15), days=1)


# --- helpers ----------------------------------------------------------------------------------
def field(topic: str, partition: int) -> str:
    return partition_field(topic, partition)


def ticks_of(plan: ClockPlan, now: datetime, limit: int = 20_000) -> list[datetime]:
    """All ticks after `now`; a plan that never stops fails here instead of hanging the suite."""
    ticks = list(islice(plan.ticks_after(now), limit + 1))
    assert len(ticks) <= limit, "the tick plan does not stop at its end"
    return ticks


# --- the tick plan ----------------------------------------------------------------------------
def test_ticks_step_from_the_start_to_the_end() -> None:
    ticks = ticks_of(PLAN, START)
    assert PLAN.end == datetime(2025, 1, 2, 8)
    assert ticks[:3] == [datetime(2025, 1, 1, 8, 15), datetime(2025, 1, 1, 8, 30), datetime(2025, 1, 1, 8, 45)]
    assert len(ticks) == 24 * 4
    assert ticks[-1] == PLAN.end


def test_last_tick_lands_on_the_end_when_the_step_does_not_divide_the_span() -> None:
    plan = ClockPlan(start=START, step=timedelta(minutes=7), days=1)  # 1440 / 7 = 205 rest 5
    ticks = ticks_of(plan, START)
    assert len(ticks) == 206
    assert ticks[-2] == START + 205 * timedelta(minutes=7)
    assert ticks[-1] == plan.end  # a short last step, not a tick past the end


def test_a_step_longer_than_the_run_is_one_tick_at_the_end() -> None:
    plan = ClockPlan(start=START, step=timedelta(days=5), days=2)
    assert ticks_of(plan, START) == [plan.end]


def test_nothing_after_the_end() -> None:
    assert ticks_of(PLAN, PLAN.end) == []
    assert ticks_of(PLAN, PLAN.end + timedelta(hours=3)) == []


def test_resuming_mid_run_continues_the_same_ticks() -> None:
    """After a restart the clock resumes from the tick it last published: the rest of the plan, unchanged."""
    ticks = ticks_of(PLAN, START)
    assert ticks_of(PLAN, ticks[40]) == ticks[41:]
    assert ticks_of(PLAN, ticks[-2]) == [PLAN.end]


def test_ticks_are_lazy() -> None:
    """The plan is walked tick by tick; a long run must not be materialised up front."""
    plan = ClockPlan(start=START, step=timedelta(seconds=1), days=10_000)
    assert list(islice(plan.ticks_after(START), 2)) == [START + timedelta(seconds=1), START + timedelta(seconds=2)]


@given(step_seconds=st.integers(30, 3 * 86_400), days=st.integers(1, 3), resume=st.integers(0, 3 * 86_400))
def test_tick_plan_properties(step_seconds: int, days: int, resume: int) -> None:
    """From any point: strictly increasing, never past the end, full steps but the last, last is the end."""
    plan = ClockPlan(start=START, step=timedelta(seconds=step_seconds), days=days)
    now = START + timedelta(seconds=resume)
    ticks = ticks_of(plan, now)
    if now >= plan.end:
        assert ticks == []
        return
    assert ticks[-1] == plan.end
    gaps = [b - a for a, b in zip([now, *ticks], ticks)]
    assert all(gap == plan.step for gap in gaps[:-1])
    assert timedelta(0) < gaps[-1] <= plan.step


# --- time in Redis ----------------------------------------------------------------------------
@pytest.mark.parametrize("t", [START, datetime(2025, 12, 31, 23, 59, 59), datetime(2024, 2, 29, 0, 0, 1)])
def test_time_round_trips_through_its_encoding(t: datetime) -> None:
    text = encode_time(t)
    assert decode_time(text) == t
    assert decode_time(text.encode()) == t  # redis-py hands back bytes


def test_encoding_is_readable_iso() -> None:
    assert encode_time(datetime(2025, 1, 1, 8, 5)) == "2025-01-01T08:05:00"


def test_encoded_times_sort_like_the_times() -> None:
    """Redis and people compare the text: its order must be the time order."""
    times = [datetime(2025, 1, 1, 9), datetime(2025, 1, 1, 10), datetime(2025, 1, 2), datetime(2025, 10, 1)]
    assert sorted(encode_time(t) for t in reversed(times)) == [encode_time(t) for t in times]


# --- lockstep: tick participants --------------------------------------------------------------
def test_tick_participants_behind_and_caught_up() -> None:
    tick = datetime(2025, 1, 1, 9)
    done = {
        "producers": tick,  # finished this tick
        "bridge": tick - timedelta(minutes=15),  # still on the previous one
        "newcomer": None,  # registered, never finished a tick
        "eager": tick + timedelta(minutes=15),  # ahead counts as done
    }
    assert behind_ticks(done, tick) == ["bridge", "newcomer"]


def test_no_tick_participants_is_nobody_behind() -> None:
    assert behind_ticks({}, START) == []


# --- lockstep: offset participants ------------------------------------------------------------
ENDS = {field("shelf_events", 0): 10, field("shelf_events", 1): 5, field("alerts", 0): 3}


def test_offset_participant_caught_up_on_every_partition_it_reads() -> None:
    positions = {"stock": {field("shelf_events", 0): 10, field("shelf_events", 1): 5}}
    assert behind_offsets(positions, {"stock": ["shelf_events"]}, ENDS) == []


def test_offset_participant_short_on_one_partition_is_behind() -> None:
    positions = {"stock": {field("shelf_events", 0): 10, field("shelf_events", 1): 4}}
    assert behind_offsets(positions, {"stock": ["shelf_events"]}, ENDS) == ["stock"]


def test_only_topics_a_participant_reads_count() -> None:
    """Alerts it never reads cannot hold it back, however far behind it would be on them."""
    positions = {"stock": {field("shelf_events", 0): 10, field("shelf_events", 1): 5}}
    assert behind_offsets(positions, {"stock": ["shelf_events"]}, ENDS) == []
    assert behind_offsets(positions, {"stock": ["shelf_events", "alerts"]}, ENDS) == ["stock"]


def test_a_missing_position_counts_as_offset_zero() -> None:
    positions = {"alerts-sink": {}}
    assert behind_offsets(positions, {"alerts-sink": ["alerts"]}, ENDS) == ["alerts-sink"]
    assert behind_offsets({}, {"alerts-sink": ["alerts"]}, ENDS) == ["alerts-sink"]  # never reported at all
    # and an empty partition (end 0) needs no position to be caught up
    assert behind_offsets({}, {"alerts-sink": ["alerts"]}, {field("alerts", 0): 0}) == []


def test_a_position_past_the_end_is_caught_up() -> None:
    positions = {"stock": {field("shelf_events", 0): 11, field("shelf_events", 1): 9}}
    assert behind_offsets(positions, {"stock": ["shelf_events"]}, ENDS) == []


def test_topic_names_are_matched_whole() -> None:
    """`shelf_events_v2:0` is not a partition of `shelf_events`, nor `shelf_event` of it."""
    ends = {field("shelf_events_v2", 0): 7}
    assert behind_offsets({}, {"stock": ["shelf_events"]}, ends) == []
    assert behind_offsets({}, {"stock": ["shelf_event"]}, {field("shelf_events", 0): 7}) == []


def test_several_participants_are_reported_sorted_each_once() -> None:
    positions = {
        "zeta": {},
        "alpha": {field("shelf_events", 0): 0, field("shelf_events", 1): 0},
        "mid": {field("shelf_events", 0): 10, field("shelf_events", 1): 5, field("alerts", 0): 3},
    }
    topics = {"zeta": ["alerts"], "alpha": ["shelf_events", "alerts"], "mid": ["shelf_events", "alerts"]}
    assert behind_offsets(positions, topics, ENDS) == ["alpha", "zeta"]


# --- what a waiting check reports: who is behind, and by how much ------------------------------
def test_tick_lags_name_the_last_tick_each_laggard_finished() -> None:
    tick = datetime(2025, 1, 1, 9)
    done = {"producers": tick, "bridge": tick - timedelta(minutes=15), "newcomer": None}
    assert tick_lags(done, tick) == ["bridge at 2025-01-01T08:45:00", "newcomer (no tick yet)"]
    assert tick_lags({"producers": tick}, tick) == []


def test_offset_lags_count_the_records_left_per_participant_on_its_topics() -> None:
    positions = {"stock": {field("shelf_events", 0): 7, field("shelf_events", 1): 5},
                 "alerts-sink": {field("alerts", 0): 3}, "never": {}}
    topics = {"stock": ["shelf_events", "alerts"], "alerts-sink": ["alerts"], "never": ["alerts", "shelf_events"]}
    assert offset_lags(positions, topics, ENDS) == [
        "never 18 records behind on alerts,shelf_events",  # 3 + 10 + 5: no position is offset 0
        "stock 6 records behind on alerts,shelf_events",  # 3 on shelf_events:0, 3 on alerts:0
    ]


def test_offset_lags_name_the_same_participants_as_behind_offsets() -> None:
    positions = {"a": {field("shelf_events", 0): 11}, "b": {}, "c": {field("alerts", 0): 3}}
    topics = {"a": ["shelf_events"], "b": ["alerts"], "c": ["alerts"]}
    assert [lag.split(" ")[0] for lag in offset_lags(positions, topics, ENDS)] == behind_offsets(positions, topics, ENDS)


# --- a paused demo clock does not race to make up the paused time ------------------------------
def test_a_demo_step_is_due_one_step_after_the_last_was_due() -> None:
    assert next_step_due(100.0, 0.1, None) == pytest.approx(100.1)


def test_after_a_pause_the_next_step_is_due_one_step_after_the_resume() -> None:
    """A 60 s pause at 10 steps a second would otherwise be made up by 600 steps in a burst."""
    assert next_step_due(100.0, 0.1, resumed_at=160.0) == pytest.approx(160.1)


@given(due=st.floats(0, 1e6), step=st.floats(0.001, 100), paused_for=st.floats(0, 1e4))
def test_steps_after_a_pause_keep_the_demo_pace(due: float, step: float, paused_for: float) -> None:
    """From the resume on, the steps are a step apart: never two due at once to catch up."""
    first = next_step_due(due, step, resumed_at=due + paused_for)
    second = next_step_due(first, step, None)
    assert first >= due + paused_for and second - first == pytest.approx(step)
