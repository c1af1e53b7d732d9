"""`smartshelf chaos`'s pure parts: the fault plan is a function of the seed, one fault per component in order,
each while the run goes on; the verdict holds only when the disturbed run ended as the undisturbed one."""

from __future__ import annotations

from datetime import datetime, timedelta

from smartshelf.runtime.chaos import DOWN_S, KILLED, PAUSE_S, PAUSED, Injector, plan_faults, verdict

START = datetime(2025, 1, 6, 0)
STEP = timedelta(hours=2)


def test_the_plan_is_the_seeds_one_fault_per_component_in_order_within_the_run() -> None:
    plan = plan_faults(42, START, 1, STEP)
    assert plan == plan_faults(42, START, 1, STEP)
    assert plan != plan_faults(43, START, 1, STEP)
    assert [(f.component, f.kind) for f in plan] == [*((name, "kill") for name in KILLED), (PAUSED, "pause")]
    assert [f.at for f in plan] == sorted(f.at for f in plan)
    assert START + timedelta(hours=1) <= plan[0].at and plan[-1].at <= START + timedelta(hours=21)  # ticks go on
    assert all(DOWN_S[0] <= f.hold_s <= DOWN_S[1] for f in plan if f.kind == "kill")
    assert all(PAUSE_S[0] <= f.hold_s <= PAUSE_S[1] for f in plan if f.kind == "pause")


def test_a_plan_can_leave_out_the_pause_and_spans_several_days() -> None:
    plan = plan_faults(1, START, 3, STEP, killed=("kafka", "redis"), paused=None)
    assert [f.component for f in plan] == ["kafka", "redis"]
    assert plan[1].at > START + timedelta(days=1)


def _summary(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"digest": "d1", "events": 100, "events_by_topic": {"shelf_events": 60,
                                                                                   "foot_traffic": 40},
                               "sales": 5, "alerts": 3, "dead_letters": 0, "repeated_ids": {}, "checks_ok": True,
                               "pulse": {"digest": "p1"}, "wall_s": 1.0}
    return {**base, **changes}


def _injected() -> Injector:
    injector = Injector(42, 1, killed=("kafka",), paused=None)
    injector.plan = plan_faults(42, START, 1, STEP, killed=("kafka",), paused=None)
    injector.done.append({"component": "kafka", "fault": "kill"})
    return injector


def test_the_verdict_holds_when_the_outcome_is_the_same() -> None:
    assert verdict(_summary(), _summary(wall_s=9.0), _injected())["ok"]


def test_the_verdict_fails_on_any_difference() -> None:
    injected = _injected()
    lost = verdict(_summary(), _summary(events_by_topic={"shelf_events": 59, "foot_traffic": 40}, events=99),
                   injected)
    assert not lost["ok"] and lost["events_lost"] == 1 and "events" in lost["differing"]
    assert lost["differences"]["events"] == {"reference": 100, "disturbed": 99}  # what differs, not just which
    twice = verdict(_summary(), _summary(repeated_ids={"alerts": 2}), injected)
    assert not twice["ok"] and twice["events_duplicated"] == 2
    assert not verdict(_summary(), _summary(digest="d2"), injected)["same_digest"]
    assert not verdict(_summary(), _summary(pulse={"digest": "p2"}), injected)["ok"]
    failed = verdict(_summary(), _summary(checks_ok=False, conservation_problems=["item I1: 1 unit missing"],
                                          twin_world_differences=[]), injected)
    assert not failed["ok"] and failed["check_problems"] == {"conservation_problems": ["item I1: 1 unit missing"]}


def test_the_verdict_fails_when_a_fault_was_not_injected() -> None:
    injector = _injected()
    injector.done.clear()
    assert not verdict(_summary(), _summary(), injector)["ok"]
