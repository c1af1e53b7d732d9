"""The embedded connect worker: runs the connector configs of kafka-components/kafka-connect/ (smartshelf.connect).

Sinks: one consumer reads every sink topic. Each poll becomes one PostgreSQL transaction that writes the rows
(upsert by key, delete on tombstone, insert-only), and the next offset of every partition it read, in
ops.connect_offsets. A restart resumes from there: a kill -9 loses nothing and writes nothing twice.
Records that cannot be written go to `dead_letters` with the reason, before that transaction commits; the end of
dead_letters is committed with it, so after a crash the letters already sent are read back and not sent again.

Sources: each config table is polled by its change column; rows changed since the last poll go to their
compacted topic, then the last change is committed (a crash in between sends the same values again, which a
compacted topic keeps once).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values
from pydantic import BaseModel

from smartshelf import logs
from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, Partition, Record
from smartshelf.adapters.redis_clock import redis_client
from smartshelf.apps.lifecycle import TRANSIENT_ERRORS, Lifecycle, serve
from smartshelf.connect import (
    CONFIG_DIR, SMARTSHELF_CLASSES, SinkRecord, SinkSpec, SourceSpec, TableWrites, load_connectors, plan_writes, record_action,
)
from smartshelf.errors import SmartShelfError, first_line
from smartshelf.ingress import dead_letter, parse_record
from smartshelf.registry import DEAD_LETTERS, Table, table, topic
from smartshelf.schemas import ConnectOffset, ConnectSourceOffset, DeadLetter
from smartshelf.settings import Settings

NAME = "connect"
STATS_KEY = "connect:stats"
# the worker's own row in ops.connect_offsets: where dead_letters ended when it last committed
DEAD_LETTERS_MARK = "connect-worker:dead-letters-sent"
POLL_S = 0.2
Origin = tuple[str, int, int]  # the (topic, partition, offset) a dead letter is about


@dataclass(frozen=True)
class Letter:
    record: SinkRecord
    reason: str


def _ident(target: Table) -> sql.Composable:
    assert target.pg is not None
    return sql.Identifier(*target.pg.split("."))


def _epoch_ms(ts: datetime) -> int:
    return int(ts.replace(tzinfo=UTC).timestamp() * 1000)


class ConnectWorker:
    def __init__(self, settings: Settings, specs: list[SinkSpec | SourceSpec] | None = None) -> None:
        specs = specs if specs is not None else load_connectors(CONFIG_DIR)
        if settings.connect_runs == "smartshelf":
            specs = [s for s in specs if isinstance(s, SinkSpec) and s.connector_class in SMARTSHELF_CLASSES]
        self.sinks = {s.topic.name: s for s in specs if isinstance(s, SinkSpec)}
        self.sources = [s for s in specs if isinstance(s, SourceSpec)]
        self.crash_point = settings.crash_point
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.producer = self.kafka.producer()
        self.pg = postgres.open_connection(settings)
        self.stats: Counter[str] = Counter()
        self.consumer = self.kafka.consumer(batch=max((s.batch_size for s in self.sinks.values()), default=1))
        self.positions: dict[Partition, int] = {}
        self.letters_end: dict[Partition, int] = {}
        # the letters in dead_letters whose records have not been committed past yet: origin -> where the letter is
        self.already_sent: dict[Origin, tuple[Partition, int]] = {}
        self.source_marks: dict[str, datetime] = {}
        self.next_source_poll = 0.0
        self._resume()

    # --- start-up ---------------------------------------------------------------------------------
    def _resume(self) -> None:
        with self.pg, self.pg.cursor() as cur:
            cur.execute("SELECT connector, topic, kafka_partition, next_offset FROM ops.connect_offsets")
            committed = {(c, t, p): o for c, t, p, o in cur.fetchall()}
            cur.execute("SELECT connector, last_change FROM ops.connect_source_offsets")
            self.source_marks = dict(cur.fetchall())
        for spec in self.sinks.values():
            for tp in self.kafka.partitions_for(spec.topic.name):
                self.positions[tp] = committed.get((spec.name, tp.topic, tp.partition), 0)
        letters = self.kafka.partitions_for(DEAD_LETTERS)
        self.letters_end = {tp: committed.get((DEAD_LETTERS_MARK, tp.topic, tp.partition), 0) for tp in letters}
        self.already_sent = self._letters_since_mark(letters)
        if self.positions:
            self.consumer.assign(self.positions)

    def _letters_since_mark(self, letters: list[Partition]) -> dict[Origin, tuple[Partition, int]]:
        """The dead letters after the committed mark, by the record they are about: a replay must not send them
        again. The mark never passes a letter whose record is still to be committed (`_mark`)."""
        sent = {}
        for record in self.kafka.read(letters, start=self.letters_end):
            parsed = dead_letter_origin(record.value)
            if parsed is not None:
                sent[parsed] = (Partition(record.topic, record.partition), record.offset)
        return sent

    def _mark(self, positions: dict[Partition, int]) -> dict[Partition, int]:
        """Where the next start must read dead_letters from: the end of what was sent, but no further than the
        first letter of a record that `positions` has not passed (an earlier attempt's letter, or ours)."""
        mark = dict(self.letters_end)
        for origin, (tp, offset) in self.already_sent.items():
            if _ahead_of(origin, positions):
                mark[tp] = min(mark.get(tp, offset), offset)
        return mark

    # --- sinks ------------------------------------------------------------------------------------
    def step(self, timeout_s: float = POLL_S) -> int:
        """Write one poll's records and run the sources that are due; returns the records handled."""
        polled = self.consumer.poll(timeout_s) if self.positions else {}
        handled = sum(len(records) for records in polled.values())
        if handled:
            self._write(polled)
        if time.monotonic() >= self.next_source_poll:
            self._poll_sources()
            self.next_source_poll = time.monotonic() + min((s.poll_interval_ms for s in self.sources),
                                                           default=1000) / 1000
        return handled

    def _write(self, polled: dict[Partition, list[Record]]) -> None:
        letters: list[Letter] = []
        ends: dict[Partition, int] = {}
        with self.pg, self.pg.cursor() as cur:
            for tp, consumed in polled.items():
                spec = self.sinks[tp.topic]
                records = [SinkRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                      datetime.fromtimestamp(r.timestamp / 1000, UTC).replace(tzinfo=None))
                           for r in consumed]
                writes, rejected = plan_writes(spec, ((r, record_action(spec, r)) for r in records))
                letters.extend(Letter(r, reason) for r, reason in rejected)
                for pending in writes:
                    letters.extend(self._apply(cur, spec, pending))
                ends[tp] = records[-1].offset + 1
                self.stats[f"records:{spec.name}"] += len(records)
            self._send_letters(letters)
            if self.crash_point == "connect.before_commit":  # drill: rows and letters out, nothing committed
                os._exit(137)
            offsets = [ConnectOffset(connector=self.sinks[tp.topic].name, topic=tp.topic, kafka_partition=tp.partition,
                                     next_offset=end) for tp, end in ends.items()]
            offsets += [ConnectOffset(connector=DEAD_LETTERS_MARK, topic=tp.topic, kafka_partition=tp.partition,
                                      next_offset=end) for tp, end in self._mark({**self.positions, **ends}).items()]
            postgres.upsert_rows(cur, table("connect_offsets"), offsets)
        self.positions.update(ends)
        # what is committed will not be read again; a letter of a record not read yet is still to be skipped
        self.already_sent = {origin: where for origin, where in self.already_sent.items()
                             if _ahead_of(origin, self.positions)}

    def _apply(self, cur: psycopg2.extensions.cursor, spec: SinkSpec, pending: TableWrites) -> list[Letter]:
        """Write one table's share of a batch; for insert-only tables, the records whose key was already there."""
        rows = list(pending.upserts.values())
        if pending.deletes:
            _delete(cur, pending.table, sorted(pending.deletes))
            self.stats[f"deleted:{spec.name}"] += len(pending.deletes)
        if not rows:
            return []
        if spec.mode == "upsert":
            postgres.upsert_rows(cur, pending.table, rows)
            self.stats[f"upserted:{spec.name}"] += len(rows)
            return []
        inserted = _insert_new(cur, pending.table, rows)
        self.stats[f"inserted:{spec.name}"] += len(inserted)
        if spec.mode == "dead_letters" or pending.table is not spec.tables[0]:
            return []  # a dead letter is kept once by where it sits; a basket's items follow its transaction row
        return [Letter(pending.sources[key], f"duplicate {','.join(pending.table.key)} "
                                             f"{'|'.join(key)}: already in {pending.table.pg}")
                for key in pending.upserts if key not in inserted]

    def _send_letters(self, letters: list[Letter]) -> None:
        fresh = [letter for letter in letters if (letter.record.topic, letter.record.partition,
                                                  letter.record.offset) not in self.already_sent]
        if not fresh:
            return
        target = topic(DEAD_LETTERS)
        outgoing = []
        for letter in fresh:
            record = letter.record
            value = dead_letter(record.topic, record.value, letter.reason, record.timestamp, record.partition,
                                record.offset)
            outgoing.append(Outgoing(DEAD_LETTERS, target.key_of(value).encode(), value.model_dump_json().encode(),
                                     _epoch_ms(record.timestamp)))
        for letter, metadata in zip(fresh, self.producer.send_and_wait(outgoing), strict=True):
            tp = Partition(metadata.topic, metadata.partition)
            self.letters_end[tp] = max(self.letters_end.get(tp, 0), metadata.offset + 1)
            record = letter.record
            self.already_sent[(record.topic, record.partition, record.offset)] = (tp, metadata.offset)
        self.stats["dead_letters"] += len(fresh)

    # --- sources ----------------------------------------------------------------------------------
    def _poll_sources(self) -> None:
        for spec in self.sources:
            self._poll_source(spec)

    def _poll_source(self, spec: SourceSpec) -> None:
        names = list(spec.table.schema.model_fields)
        since = self.source_marks.get(spec.name, datetime(1970, 1, 1))
        query = sql.SQL(
            "SELECT {cols}, {change} FROM {table} WHERE {change} > %s "
            "AND {change} < (clock_timestamp() AT TIME ZONE 'UTC') - %s * interval '1 millisecond' "
            "ORDER BY {change}"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, names)), change=sql.Identifier(spec.change_column),
                 table=_ident(spec.table))
        with self.pg, self.pg.cursor() as cur:
            cur.execute(query, (since, spec.delay_ms))
            changed = cur.fetchall()
        if not changed:
            return
        values = [spec.table.schema.model_validate(dict(zip(names, row[:-1], strict=True))) for row in changed]
        self.producer.send_and_wait((
            Outgoing(spec.topic.name, spec.topic.key_of(v).encode(), v.model_dump_json().encode(),
                     _epoch_ms(row[-1])) for v, row in zip(values, changed, strict=True)))
        last = changed[-1][-1]
        with self.pg, self.pg.cursor() as cur:
            postgres.upsert_rows(cur, table("connect_source_offsets"), [ConnectSourceOffset(connector=spec.name, last_change=last)])
        self.source_marks[spec.name] = last
        self.stats[f"published:{spec.name}"] += len(values)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        self.kafka.close()
        self.pg.close()


def _ahead_of(origin: Origin, positions: dict[Partition, int]) -> bool:
    """Whether the record a dead letter is about lies at or after these positions: it will be read again."""
    return origin[2] >= positions.get(Partition(origin[0], origin[1]), 0)


def dead_letter_origin(raw: bytes | None) -> Origin | None:
    """(topic, partition, offset) of the record a dead letter is about, if it says."""
    parsed = parse_record(topic(DEAD_LETTERS), raw)
    if isinstance(parsed, DeadLetter) and parsed.source_partition is not None and parsed.source_offset is not None:
        return parsed.source, parsed.source_partition, parsed.source_offset
    return None


# --- SQL ------------------------------------------------------------------------------------------
def _columns(target: Table) -> list[str]:
    return list(target.schema.model_fields)


def _values(target: Table, rows: list[BaseModel]) -> list[tuple[object, ...]]:
    return [tuple(getattr(row, name) for name in _columns(target)) for row in rows]


def _insert_new(cur: psycopg2.extensions.cursor, target: Table, rows: list[BaseModel]) -> set[tuple[str, ...]]:
    """Insert the rows whose key is not there yet; returns the keys inserted."""
    names = _columns(target)
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT DO NOTHING RETURNING {}").format(
        _ident(target), sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in target.key))
    returned = execute_values(cur, query.as_string(cur), _values(target, rows), page_size=1000, fetch=True)
    return {tuple(row) for row in returned}


def _delete(cur: psycopg2.extensions.cursor, target: Table, keys: list[tuple[str, ...]]) -> None:
    match = sql.SQL(" AND ").join(sql.SQL("t.{0}::text = d.{0}").format(sql.Identifier(k)) for k in target.key)
    query = sql.SQL("DELETE FROM {} AS t USING (VALUES %s) AS d ({}) WHERE {}").format(
        _ident(target), sql.SQL(", ").join(map(sql.Identifier, target.key)), match)
    execute_values(cur, query.as_string(cur), keys, page_size=1000)


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    client = redis_client(settings)
    life = Lifecycle(NAME, client)
    began = time.monotonic()
    totals: Counter[str] = Counter()

    def build() -> ConnectWorker:
        with life.beating():
            try:
                worker = ConnectWorker(settings)
            except TRANSIENT_ERRORS:
                raise
            except (SmartShelfError, psycopg2.Error) as exc:
                logs.error(logger, "cannot start", error=first_line(exc))
                raise SystemExit(1) from exc
        logs.info(logger, "started", sinks=len(worker.sinks), sources=len(worker.sources),
                  already_sent=len(worker.already_sent))
        return worker

    def step(worker: ConnectWorker) -> None:
        worker.step()
        if worker.stats:  # counts since the last step, added to those of earlier runs
            pipe = client.pipeline()
            for name, count in worker.stats.items():
                pipe.hincrby(STATS_KEY, name, count)
            pipe.execute()
            totals.update(worker.stats)
            worker.stats.clear()

    worker = serve(life, logger, build, step)
    if worker is not None:
        worker.close()
    logs.info(logger, "stopped", records=sum(v for k, v in totals.items() if k.startswith("records:")),
              seconds=round(time.monotonic() - began, 1))
