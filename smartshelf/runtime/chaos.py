"""`smartshelf chaos`: faults injected into a fast simulated day while events flow, and proof that none of them
changed the outcome (issue 23).

Each component in turn — the broker, PostgreSQL, Redis, the Spark driver, Kafka Connect, the bridge, the
producers and the clock — is killed -9 with its whole process group at a seeded simulated moment (and a seeded
fraction of a second into that tick, while its events flow), kept down a seeded few seconds, and started again;
one service is stopped (SIGSTOP) for a while and continued. A service that dies because another went down is
started again too, as `smartshelf up`'s watchdog would, and reported. The run must end as an undisturbed run of
the same seed does: the same digest and pulse, the same count of every kind of record, no id twice in any
topic, every check ok (stock conserved, twin = world, PostgreSQL = topics).

The schedule is a pure function of the seed and the run's span (`plan_faults`), so a failing run can be
repeated; `Injector` carries it out from the run's poll loop (smartshelf.runtime.sim.run_sim's `during`).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from smartshelf.errors import SmartShelfError, first_line
from smartshelf.runtime import supervisor
from smartshelf.settings import Settings

if TYPE_CHECKING:
    from smartshelf.runtime.sim import Progress  # sim imports the whole runtime: only for the type


KILLED = ("kafka", "postgres", "redis", "spark", "connect", "bridge", "producers", "clock")
PAUSED = "bridge"
# what a run of sim may find down: every service, since a fault may take another with it (the injector starts it)
ALL_SERVICES = (*KILLED, "spark-master", *(f"spark-worker-{n}" for n in range(1, 9)))
DOWN_S = (1.0, 5.0)  # how long a killed component stays down
PAUSE_S = (5.0, 15.0)  # how long the paused one stays stopped
INTO_TICK_S = (0.0, 2.0)  # wall seconds after the clock reached the moment: while the tick's events flow
# what an undisturbed run and a disturbed one must agree on
SAME = ("digest", "events", "events_by_topic", "sales", "alerts", "restocks", "refills", "supplier_orders",
        "supplier_receipts", "discounts", "removals", "dead_letters")
# where a run's summary says why its checks failed (smartshelf.runtime.sim.summarise)
CHECK_PROBLEMS = ("conservation_problems", "twin_world_differences", "expired_lot_examples",
                  "postgres_mirror_differences", "postgres_shelf_weight_mismatches", "tick_check_failures")


@dataclass(frozen=True)
class Fault:
    component: str
    kind: str  # "kill" (-9, then started again) or "pause" (SIGSTOP, then SIGCONT)
    at: datetime  # simulated
    into_tick_s: float
    hold_s: float  # down (kill) or stopped (pause)


def plan_faults(seed: int, start: datetime, days: int, step: timedelta, killed: Sequence[str] = KILLED,
                paused: str | None = PAUSED) -> list[Fault]:
    """One fault per component, in order, each at a seeded moment of its own slot of the run's span: from an hour
    after the start to an hour before the last tick (`step` apart), so that each comes while ticks still go."""
    rng = random.Random(seed)
    faults = [(name, "kill") for name in killed] + ([(paused, "pause")] if paused else [])
    first, span = start + timedelta(hours=1), timedelta(days=days) - step - timedelta(hours=2)
    slot = span / max(len(faults), 1)
    planned = []
    for index, (name, kind) in enumerate(faults):
        at = first + slot * index + slot * rng.random()
        hold = rng.uniform(*(DOWN_S if kind == "kill" else PAUSE_S))
        planned.append(Fault(name, kind, at.replace(microsecond=0), round(rng.uniform(*INTO_TICK_S), 2),
                             round(hold, 2)))
    return planned


@dataclass
class Injector:
    """Carries out the plan of `seed` from a run's poll loop: `__call__(settings, now)` as run_sim's `during`
    (the plan is made at the first call, from the run's own clock start)."""

    seed: int
    days: int
    killed: Sequence[str] = KILLED
    paused: str | None = PAUSED
    plan: list[Fault] = field(default_factory=list)
    done: list[dict[str, object]] = field(default_factory=list)
    collateral: list[dict[str, object]] = field(default_factory=list)  # services that died of another's fault

    def __call__(self, settings: Settings, now: datetime | None) -> None:
        if not self.plan:
            self.plan = plan_faults(self.seed, settings.sim_start, self.days,
                                    timedelta(seconds=settings.step_seconds), self.killed, self.paused)
        self._restart_collateral(settings, now)
        if now is None or len(self.done) == len(self.plan):
            return
        fault = self.plan[len(self.done)]
        if now < fault.at:
            return
        time.sleep(fault.into_tick_s)
        began = time.monotonic()
        if fault.kind == "kill":
            supervisor.kill_hard(settings, fault.component)
            time.sleep(fault.hold_s)
            supervisor.start(settings, [fault.component])
        else:
            pid = supervisor.pid_of(settings, fault.component)
            os.killpg(pid, signal.SIGSTOP)
            time.sleep(fault.hold_s)
            os.killpg(pid, signal.SIGCONT)
        self.done.append({"component": fault.component, "fault": fault.kind, "at": now.isoformat(),
                          "held_s": fault.hold_s, "back_after_s": round(time.monotonic() - began, 1)})

    def _restart_collateral(self, settings: Settings, now: datetime | None) -> None:
        if down := supervisor.crashed(settings):
            supervisor.start(settings, down)
            self.collateral.extend({"component": name, "at": now.isoformat() if now else None} for name in down)


def verdict(reference: dict[str, object], disturbed: dict[str, object], injector: Injector) -> dict[str, object]:
    """The chaos run's summary: each fault, and whether the run ended as the undisturbed one did."""
    differing = [name for name in SAME if disturbed.get(name) != reference.get(name)]
    pulse_same = _pulse_digest(disturbed) == _pulse_digest(reference)
    repeated = disturbed.get("repeated_ids", {})
    assert isinstance(repeated, dict)
    events, reference_events = disturbed.get("events_by_topic", {}), reference.get("events_by_topic", {})
    assert isinstance(events, dict) and isinstance(reference_events, dict)
    lost = sum(max(0, int(count) - int(events.get(name, 0))) for name, count in reference_events.items())
    all_injected = len(injector.done) == len(injector.plan)
    ok = (all_injected and not differing and pulse_same and not repeated and lost == 0
          and bool(disturbed.get("checks_ok")))
    differences = {name: {"reference": reference.get(name), "disturbed": disturbed.get(name)} for name in differing}
    return {"ok": ok, "faults": injector.done, "faults_planned": len(injector.plan),
            "collateral_restarts": injector.collateral, "same_digest": disturbed.get("digest") == reference.get("digest"),
            "differing": differing, "differences": differences,
            "check_problems": {name: disturbed.get(name) for name in CHECK_PROBLEMS if disturbed.get(name)},
            "pulse_same": pulse_same, "events_lost": lost,
            "events_duplicated": sum(int(n) for n in repeated.values()), "repeated_ids": repeated,
            "checks_ok": disturbed.get("checks_ok"), "digest": disturbed.get("digest"),
            "reference_digest": reference.get("digest"), "wall_s": disturbed.get("wall_s"),
            "reference_wall_s": reference.get("wall_s")}


def _pulse_digest(summary: dict[str, object]) -> object:
    pulse = summary.get("pulse")
    return pulse.get("digest") if isinstance(pulse, dict) else None


def run_chaos(base: Settings, days: int, seed: int, killed: Sequence[str] = KILLED, paused: str | None = PAUSED,
              on_progress: Progress = lambda now, end: None,
              reference: dict[str, object] | None = None) -> dict[str, object]:
    """An undisturbed fast run of `seed` (unless its summary is given), then the same run with the faults;
    the verdict of the two. A disturbed run that breaks down is a verdict too (`ok` false, with its error)."""
    from smartshelf.runtime.sim import run_sim

    if reference is None:
        reference = run_sim(base, days, seed, None, fast=True, on_progress=on_progress)
    injector = Injector(seed, days, tuple(killed), paused)
    try:
        disturbed = run_sim(base, days, seed, None, fast=True, on_progress=on_progress, during=injector,
                            may_die=ALL_SERVICES)
    except SmartShelfError as error:
        return {**verdict(reference, {}, injector), "error": first_line(error)}
    return verdict(reference, disturbed, injector)
