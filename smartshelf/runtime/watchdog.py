"""The watchdog of `smartshelf up`: restarts any server or service of the stack that has died or hung.

Every process the supervisor started keeps its pid file until `smartshelf down` (or `stop`) removes it, so a
pid file whose process is gone is a crash: the watchdog starts that process again, dependencies first, the
same way `smartshelf up` does. Each component is built to be restarted at any point (kill -9 included: the
restart tests), so a restart loses nothing. A process that keeps dying is given up on after MAX_RESTARTS in
WINDOW_S and left for a person (`smartshelf status` shows it, the log says why).

A server that is alive but has a part failed inside it (Kafka Connect: a failed connector or task, which Connect
leaves failed) has that part restarted (Server.heal). A service that is alive but has not beaten its heartbeat for WATCHDOG_HUNG_AFTER_S (stopped with SIGSTOP, or
stuck) is killed with -9, with its process group, and then restarted like a crashed one. It also rotates the
processes' logs (run/logs) past LOG_MAX_MB.

The watchdog is watched in turn: a standby (`watchdog-standby`, the same module with `--standby`) does nothing
but restart the watchdog when it has died or hung, and the watchdog restarts the standby like any other process;
so killing either one is repaired by the other.

Only `smartshelf up` runs them; scratch stacks (tests, `smartshelf sim`, benchmarks) do not, so that a crash
there fails the run instead of being hidden.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field

import redis

from smartshelf import logs
from smartshelf.adapters.redis_clock import redis_client
from smartshelf.apps.lifecycle import Lifecycle, heartbeat_age
from smartshelf.errors import SmartShelfError
from smartshelf.runtime import supervisor
from smartshelf.settings import Settings, get_settings

NAME = "watchdog"
STANDBY = "watchdog-standby"
CHECK_EVERY_S = 2.0
MAX_RESTARTS = 5
WINDOW_S = 600.0


@dataclass
class RestartBudget:
    """At most `limit` restarts of one process within `window_s` seconds."""

    limit: int = MAX_RESTARTS
    window_s: float = WINDOW_S
    _restarts: dict[str, deque[float]] = field(default_factory=dict)

    def allows(self, name: str, now: float) -> bool:
        recent = self._restarts.setdefault(name, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        return len(recent) < self.limit

    def spend(self, name: str, now: float) -> None:
        self._restarts.setdefault(name, deque()).append(now)


def hung(settings: Settings, client: redis.Redis, watched: set[str] | None = None) -> dict[str, float]:
    """The running services (of `watched`, by default all but the caller) whose heartbeat is older than
    WATCHDOG_HUNG_AFTER_S: name -> age."""
    names = [name for name in supervisor.beating(settings) if (name in watched if watched else name != NAME)]
    ages = {name: _silent_for(settings, client, name) for name in names}
    return {name: age for name, age in ages.items() if age is not None and age > settings.watchdog_hung_after_s}


def _silent_for(settings: Settings, client: redis.Redis, name: str) -> float | None:
    """How long a process has not beaten: never longer than it has run, since the beat in Redis may be its
    predecessor's (a process just started by `smartshelf up` after a `down` has not beaten yet)."""
    age = heartbeat_age(client, name)
    uptime = supervisor.uptime_s(settings, name)
    return None if age is None or uptime is None else min(age, uptime)


def watch(settings: Settings, life: Lifecycle, standby: bool = False) -> None:
    """Restart what died or hung: everything, or as the standby the watchdog only."""
    name_of_self = STANDBY if standby else NAME
    logger = logs.configure(name_of_self, settings.log_level)
    watched = {NAME} if standby else None
    budget = RestartBudget()
    given_up: set[str] = set()
    logs.info(logger, "watching", check_every_s=CHECK_EVERY_S, max_restarts=MAX_RESTARTS, window_s=WINDOW_S)
    while not life.stopping:
        try:
            life.beat()
        except redis.RedisError:
            pass  # Redis itself may be the one that died: it is restarted below like any other
        try:
            stuck = hung(settings, life.redis, watched)
        except redis.RedisError:
            stuck = {}
        if not standby:
            for name in supervisor.rotate_logs(settings.run_dir / "logs", settings.log_max_mb << 20):
                logs.info(logger, "rotated a log", log=name)
        if not standby:
            for name, repaired in supervisor.heal(settings).items():
                logs.warning(logger, "restarted what had failed inside a process", process=name,
                             failed="; ".join(repaired)[:2000])
        for name, age in stuck.items():
            logs.warning(logger, "killing a process whose heartbeat stopped (its stacks: in its log)", process=name,
                         seconds=round(age))
            supervisor.dump_stacks(settings, name)
            supervisor.kill_hard(settings, name)
        for name in supervisor.crashed(settings):
            if watched is not None and name not in watched:
                continue
            if life.stopping:
                break
            now = time.monotonic()
            if not budget.allows(name, now):
                if name not in given_up:
                    logs.error(logger, "gave up restarting", process=name, restarts=MAX_RESTARTS, window_s=WINDOW_S)
                    given_up.add(name)
                continue
            budget.spend(name, now)
            given_up.discard(name)
            logs.warning(logger, "restarting a crashed process", process=name)
            # beat meanwhile (a Spark driver takes 10-30 s to be healthy), unless it is Redis that is starting
            beating = nullcontext() if name == "redis" else life.beating()
            try:
                with beating:
                    supervisor.start(settings, [name])
            except (SmartShelfError, redis.RedisError) as exc:
                logs.error(logger, "restart failed", process=name, error=str(exc)[:2000])
        time.sleep(CHECK_EVERY_S)
    logs.info(logger, "stopped")


def main(settings: Settings, standby: bool = False) -> None:
    watch(settings, Lifecycle(STANDBY if standby else NAME, redis_client(settings)), standby)


if __name__ == "__main__":
    main(get_settings(), standby="--standby" in sys.argv[1:])
