"""Is PostgreSQL a faithful mirror of the topics? Waits for the connect worker to catch up, then compares.

Upsert sinks: each table row by row against the latest valid value per key of its compacted topic (tombstones
delete). Insert-only sinks: the table holds each valid record's id once (the first value of an id). POS: one
transaction row per valid basket and one item row per line. Dead letters: one row per dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pydantic import BaseModel

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.apps.connect_worker import DEAD_LETTERS_MARK
from smartshelf.connect import SinkSpec, load_connectors, pos_rows
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import KEY_SEPARATOR, Table
from smartshelf.schemas import PosTransaction
from smartshelf.settings import Settings

Key = tuple[str, ...]
CATCH_UP_TIMEOUT_S = 300.0


def _sinks() -> list[SinkSpec]:
    return [s for s in load_connectors() if isinstance(s, SinkSpec)]


def _committed(settings: Settings) -> dict[tuple[str, int], int]:
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT topic, kafka_partition, next_offset FROM ops.connect_offsets WHERE connector <> %s",
                    (DEAD_LETTERS_MARK,))
        return {(t, p): o for t, p, o in cur.fetchall()}


def lag(settings: Settings) -> dict[str, int]:
    """Records each sink topic has that PostgreSQL does not yet."""
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        ends = kafka.end_offsets([tp for s in _sinks() for tp in kafka.partitions_for(s.topic.name)])
    finally:
        kafka.close()
    committed = _committed(settings)
    behind: dict[str, int] = {}
    for tp, end in ends.items():
        behind[tp.topic] = behind.get(tp.topic, 0) + max(end - committed.get((tp.topic, tp.partition), 0), 0)
    return behind


def wait_caught_up(settings: Settings, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
    """Until no sink is behind twice in a row (the dead-letters sink reads what the others send)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2:
        behind = {name: n for name, n in lag(settings).items() if n}
        quiet = quiet + 1 if not behind else 0
        if behind and time.monotonic() > deadline:
            raise SmartShelfError(f"the PostgreSQL mirror did not catch up in {timeout_s:.0f}s; behind: {behind}")
        time.sleep(0.3)


def _records(kafka: KafkaAdapter, name: str) -> Iterable[tuple[bytes | None, bytes | None]]:
    for record in kafka.read(kafka.partitions_for(name)):
        yield record.key, record.value


def _row_key(target: Table, row: BaseModel) -> Key:
    return tuple(str(getattr(row, f)) for f in target.key)


def expected_rows(spec: SinkSpec, records: Iterable[tuple[bytes | None, bytes | None]]
                  ) -> dict[str, dict[Key, BaseModel]]:
    """What the sink's tables must hold after these records, by table name (dead letters: counted apart)."""
    wanted: dict[str, dict[Key, BaseModel]] = {t.name: {} for t in spec.tables}
    for key, value in records:
        if value is None:
            if spec.mode == "upsert" and key is not None:
                wanted[spec.tables[0].name].pop(tuple(key.decode().split(KEY_SEPARATOR)), None)
            continue
        parsed = parse_record(spec.topic, value)
        if isinstance(parsed, Rejection):
            continue
        if spec.mode == "upsert":
            if key is not None and key.decode() == spec.topic.key_of(parsed):
                wanted[spec.tables[0].name][_row_key(spec.tables[0], parsed)] = parsed
        elif spec.mode == "insert":
            wanted[spec.tables[0].name].setdefault(_row_key(spec.tables[0], parsed), parsed)
        elif spec.mode == "pos":
            assert isinstance(parsed, PosTransaction)
            for target, row in pos_rows(parsed):
                wanted[target.name].setdefault(_row_key(target, row), row)
    return wanted


def differences(settings: Settings, limit: int = 5) -> list[str]:
    """How PostgreSQL differs from the topics (empty: a faithful mirror); at most `limit` examples per table."""
    problems: list[str] = []
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        for spec in _sinks():
            records = list(_records(kafka, spec.topic.name))
            if spec.mode == "dead_letters":
                with postgres.connect(settings) as conn, conn.cursor() as cur:
                    stored = postgres.count_rows(cur, spec.tables[0])
                if stored != len(records):
                    problems.append(f"{spec.tables[0].pg}: {stored} rows for {len(records)} dead letters")
                continue
            for name, wanted in expected_rows(spec, records).items():
                target = next(t for t in spec.tables if t.name == name)
                with postgres.connect(settings) as conn, conn.cursor() as cur:
                    actual = {_row_key(target, r): r for r in postgres.select_rows(cur, target)}
                problems.extend(_compare(str(target.pg), wanted, actual, limit))
    finally:
        kafka.close()
    return problems


def row_counts(settings: Settings) -> dict[str, int]:
    """Rows in each table the sinks write, by PostgreSQL name."""
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        return {str(t.pg): postgres.count_rows(cur, t) for spec in _sinks() for t in spec.tables}


def _compare(name: str, wanted: dict[Key, BaseModel], actual: dict[Key, BaseModel], limit: int) -> list[str]:
    found = [f"{name} {KEY_SEPARATOR.join(k)}: missing" for k in wanted.keys() - actual.keys()]
    found += [f"{name} {KEY_SEPARATOR.join(k)}: not in its topic" for k in actual.keys() - wanted.keys()]
    found += [f"{name} {KEY_SEPARATOR.join(k)}: {actual[k]} != {wanted[k]}"
              for k in wanted.keys() & actual.keys() if actual[k] != wanted[k]]
    return sorted(found)[:limit]


def shelf_weight_mismatches(settings: Settings, limit: int = 5) -> list[str]:
    """Shelves whose mirrored weight is not current_stock × item_weight (state.shelf_state against
    ref.store_inventory, in the data's unit): what a user reading PostgreSQL relies on."""
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s.shelf_id, s.current_stock, s.current_weight, i.item_weight "
            "FROM state.shelf_state s JOIN ref.store_inventory i USING (shelf_id) "
            "WHERE s.current_weight <> s.current_stock * i.item_weight ORDER BY s.shelf_id")
        rows = cur.fetchall()
    found = [f"{shelf}: weight {weight} != {stock} × {item}" for shelf, stock, weight, item in rows[:limit]]
    return found + ([f"{len(rows) - limit} more shelves"] if len(rows) > limit else [])
