"""Is PostgreSQL a faithful mirror of the topics? Waits for Kafka Connect's sinks to catch up, then compares.

Upsert sinks: each table row by row against the latest valid value per key of its compacted topic (tombstones
delete where the sink deletes: SinkDeclaration.deletes).
Append-only topics: the table holds each valid record's id once (its latest value). POS: one
transaction row per valid basket and one item row per line (the first basket of an id). Dead letters: one row per
letter that reads as one, under where it sits (Connect's own dead letters, the failed record as it was with the
reason in headers, are counted in the topic and not mirrored).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pydantic import BaseModel

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter, Partition, Record
from smartshelf.connect import SINKS, SinkDeclaration, dead_letter_row, pos_rows, sink_group
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import KEY_SEPARATOR, Table, topic
from smartshelf.schemas import DeadLetter, PosTransaction
from smartshelf.settings import Settings

Key = tuple[str, ...]
CATCH_UP_TIMEOUT_S = 300.0


# a sink's backlog this small is read to tell records it will write from ones it skips (see `_lag`)
INSPECT_BELOW = 1000


def wait_caught_up(settings: Settings, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
    """Until no sink is behind twice in a row (the dead-letters sink reads what the others send)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        partitions = _sink_partitions(kafka)  # fixed while the stack runs: asked once, not on every poll
        while quiet < 2:
            behind = {name: n for name, n in _lag(kafka, partitions).items() if n}
            quiet = quiet + 1 if not behind else 0
            if behind and time.monotonic() > deadline:
                raise SmartShelfError(f"the PostgreSQL mirror did not catch up in {timeout_s:.0f}s; behind: {behind}")
            time.sleep(0.3)
    finally:
        kafka.close()


def _sink_partitions(kafka: KafkaAdapter) -> dict[str, list[Partition]]:
    return {declaration.topic: kafka.partitions_for(declaration.topic) for declaration in SINKS}


def _lag(kafka: KafkaAdapter, partitions: dict[str, list[Partition]]) -> dict[str, int]:
    """Records each sink topic has that its sink has not written yet.

    Connect commits a sink's offsets after its rows, but only up to the last record the sink was given: records
    its converter could not read (sent to dead_letters) stay uncommitted at the end of a partition until a
    readable one follows. So a short backlog is read, and counts only the records that can be written."""
    behind: dict[str, int] = {}
    for declaration in SINKS:
        ends = kafka.end_offsets(partitions[declaration.topic])
        committed = kafka.committed_offsets(sink_group(declaration), partitions[declaration.topic])
        pending = {tp: end - committed.get(tp, 0) for tp, end in ends.items() if end > committed.get(tp, 0)}
        if 0 < sum(pending.values()) < INSPECT_BELOW:
            backlog = kafka.read(list(pending), start={tp: committed.get(tp, 0) for tp in pending}, end=ends)
            behind[declaration.topic] = sum(_writable(declaration, record) for record in backlog)
        else:
            behind[declaration.topic] = sum(pending.values())
    return behind


def _writable(declaration: SinkDeclaration, record: Record) -> bool:
    return record.value is None or not isinstance(parse_record(topic(declaration.topic), record.value), Rejection)


def _row_key(target: Table, row: BaseModel) -> Key:
    return tuple(str(getattr(row, f)) for f in target.key)


def expected_rows(declaration: SinkDeclaration, records: Iterable[Record]) -> dict[str, dict[Key, BaseModel]]:
    """What the sink's tables must hold after these records, by table name."""
    wanted: dict[str, dict[Key, BaseModel]] = {t.name: {} for t in declaration.tables}
    source = topic(declaration.topic)
    for record in records:
        if record.value is None:
            if declaration.deletes and record.key is not None:
                wanted[declaration.tables[0].name].pop(tuple(record.key.decode().split(KEY_SEPARATOR)), None)
            continue
        parsed = parse_record(source, record.value)
        if isinstance(parsed, Rejection):
            continue
        if declaration.mode == "pos":
            assert isinstance(parsed, PosTransaction)
            for target, row in pos_rows(parsed):
                wanted[target.name].setdefault(_row_key(target, row), row)
        elif declaration.mode == "dead_letters":
            assert isinstance(parsed, DeadLetter)
            row = dead_letter_row(parsed, record.partition, record.offset)
            wanted[declaration.tables[0].name][_row_key(declaration.tables[0], row)] = row
        else:
            wanted[declaration.tables[0].name][_row_key(declaration.tables[0], parsed)] = parsed
    return wanted


def differences(settings: Settings, limit: int = 5) -> list[str]:
    """How PostgreSQL differs from the topics (empty: a faithful mirror); at most `limit` examples per table."""
    problems: list[str] = []
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        for declaration in SINKS:
            partitions = kafka.partitions_for(declaration.topic)
            # retention deletes an append-only topic's oldest records, never their rows: PostgreSQL keeps the
            # history, so only the rows of the records the topic still holds are compared
            trimmed = declaration.mode != "upsert" and any(kafka.start_offsets(partitions).values())
            records = kafka.read(partitions)
            for name, wanted in expected_rows(declaration, records).items():
                target = next(t for t in declaration.tables if t.name == name)
                with postgres.connect(settings) as conn, conn.cursor() as cur:
                    actual = {_row_key(target, r): r for r in postgres.select_rows(cur, target)}
                problems.extend(_compare(str(target.pg), wanted, actual, limit, history_kept=trimmed))
    finally:
        kafka.close()
    return problems


def row_counts(settings: Settings) -> dict[str, int]:
    """Rows in each table the sinks write, by PostgreSQL name."""
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        return {str(t.pg): postgres.count_rows(cur, t) for d in SINKS for t in d.tables}


def _compare(name: str, wanted: dict[Key, BaseModel], actual: dict[Key, BaseModel], limit: int,
             history_kept: bool = False) -> list[str]:
    """`history_kept`: the topic lost its oldest records to retention, so rows beyond it are expected."""
    found = [f"{name} {KEY_SEPARATOR.join(k)}: missing" for k in wanted.keys() - actual.keys()]
    if not history_kept:
        found += [f"{name} {KEY_SEPARATOR.join(k)}: not in its topic" for k in actual.keys() - wanted.keys()]
    found += [f"{name} {KEY_SEPARATOR.join(k)}: {actual[k]} != {wanted[k]}"
              for k in wanted.keys() & actual.keys() if actual[k] != wanted[k]]
    return sorted(found)[:limit]


def shelf_weight_mismatches(settings: Settings, limit: int = 5) -> list[str]:
    """Shelves whose mirrored weight is not current_stock × item_weight (state.shelf_state against its store's
    ref.store_inventory, in the data's unit): what a user reading PostgreSQL relies on."""
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s.store_id, s.shelf_id, s.current_stock, s.current_weight, i.item_weight "
            "FROM state.shelf_state s JOIN ref.store_inventory i USING (store_id, shelf_id) "
            "WHERE s.current_weight <> s.current_stock * i.item_weight ORDER BY s.store_id, s.shelf_id")
        rows = cur.fetchall()
    found = [f"{store} {shelf}: weight {weight} != {stock} × {item}"
             for store, shelf, stock, weight, item in rows[:limit]]
    return found + ([f"{len(rows) - limit} more shelves"] if len(rows) > limit else [])
