"""The simulated clock in Redis (keys in smartshelf.clock) and the lockstep progress reports.

Every component reads "now" through `SimClock.now()`. Participants of fast mode report progress here: tick
participants (producers, bridge) the last tick they finished, offset participants (Spark apps, connect
worker) the next offset they will read per partition.

A pause (`smartshelf check`) holds the clock still: the clock moves only while no one holds `sim:pause`, and
the test and the move are one atomic Redis script, so once `pause` has returned the time no longer changes
until `resume`. The pause key always carries a TTL: a holder that dies stops the store no longer than that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import date, datetime

import redis

from smartshelf import clock as c
from smartshelf.errors import SmartShelfError
from smartshelf.settings import Settings

POLL_S = 0.02
SIM_PAUSE = "sim:pause"  # the holder of a pause of the clock (expires: see the module docstring)

# the move and the test that no one holds a pause in one step: a pause taken before it stops it for certain
_SET_UNLESS_PAUSED = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
# take the pause, or renew it if we hold it already; answers the other holder if someone else holds it
_PAUSE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
"""
# lift only our own pause: one that expired and was taken by someone else stays
_RESUME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis(host=settings.redis_host, port=settings.redis_port, socket_timeout=30,
                       health_check_interval=30)


class SimClock:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    # --- reading the time ---------------------------------------------------------------------
    def now_or_none(self) -> datetime | None:
        value = self.redis.get(c.SIM_NOW)
        return c.decode_time(value) if value is not None else None

    def now(self) -> datetime:
        value = self.now_or_none()
        if value is None:
            raise SmartShelfError(f"the simulated clock is not running (no '{c.SIM_NOW}' in Redis)")
        return value

    def today(self) -> date:
        return c.today(self.now())

    def end(self) -> datetime | None:
        value = self.redis.get(c.SIM_END)
        return c.decode_time(value) if value is not None else None

    def done(self) -> bool:
        return bool(self.redis.exists(c.SIM_DONE))

    def wait_after(self, t: datetime | None, timeout_s: float) -> datetime | None:
        """The clock's time once it is later than `t` (None: once it is set); None if it is not in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = self.now_or_none()
            if now is not None and (t is None or now > t):
                return now
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)

    # --- setting the time (the clock service only) ---------------------------------------------
    def start(self, start: datetime, end: datetime) -> datetime:
        """Set the clock to `start` unless it is already running (a restarted clock resumes); returns now."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(c.SIM_NOW, c.encode_time(start), nx=True)
        pipe.set(c.SIM_TODAY, c.today(start).isoformat(), nx=True)
        pipe.set(c.SIM_END, c.encode_time(end))
        pipe.execute()
        return self.now()

    def set(self, t: datetime) -> bool:
        """Move the clock to `t`; False (and no move) while someone holds a pause."""
        moved = self.redis.eval(_SET_UNLESS_PAUSED, 3, c.SIM_NOW, c.SIM_TODAY, SIM_PAUSE,
                                c.encode_time(t), c.today(t).isoformat())
        return bool(moved)

    def finish(self) -> None:
        self.redis.set(c.SIM_DONE, "1")

    # --- pausing the clock (smartshelf check) ---------------------------------------------------
    def pause(self, holder: str, ttl_s: float) -> None:
        """Hold the clock still for at most `ttl_s` seconds from now (again: renews); raises if someone else
        holds it."""
        other = self.redis.eval(_PAUSE, 1, SIM_PAUSE, holder, max(int(ttl_s * 1000), 1))
        if other:
            raise SmartShelfError(f"the clock is already paused by {other.decode()} (another check?); "
                                  f"try again once it is done")

    def resume(self, holder: str) -> None:
        self.redis.eval(_RESUME, 1, SIM_PAUSE, holder)

    def paused(self) -> str | None:
        """Who holds the clock still, if anyone."""
        holder = self.redis.get(SIM_PAUSE)
        return holder.decode() if holder is not None else None

    # --- lockstep participants -------------------------------------------------------------------
    def register_tick_participant(self, name: str) -> None:
        self.redis.hset(c.SIM_PARTICIPANTS, name, json.dumps({"kind": "tick"}))

    def register_offset_participant(self, name: str, topics: Iterable[str]) -> None:
        self.redis.hset(c.SIM_PARTICIPANTS, name, json.dumps({"kind": "offsets", "topics": sorted(topics)}))

    def unregister(self, name: str) -> None:
        self.redis.hdel(c.SIM_PARTICIPANTS, name)

    def participants(self) -> dict[str, dict[str, object]]:
        return {k.decode(): json.loads(v) for k, v in self.redis.hgetall(c.SIM_PARTICIPANTS).items()}

    def tick_done(self, name: str, t: datetime, pipe: redis.client.Pipeline | None = None) -> None:
        """Report that `name` finished tick `t`; pass a pipeline to make it part of a transaction."""
        (pipe or self.redis).hset(c.SIM_TICKS, name, c.encode_time(t))

    def ticks_done(self) -> dict[str, datetime]:
        return {k.decode(): c.decode_time(v) for k, v in self.redis.hgetall(c.SIM_TICKS).items()}

    def last_tick_done(self, name: str) -> datetime | None:
        value = self.redis.hget(c.SIM_TICKS, name)
        return c.decode_time(value) if value is not None else None

    def offsets_done(self, name: str, positions: Mapping[tuple[str, int], int]) -> None:
        if positions:
            self.redis.hset(c.offsets_key(name),
                            mapping={c.partition_field(t, p): o for (t, p), o in positions.items()})

    def positions(self, name: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(c.offsets_key(name)).items()}
