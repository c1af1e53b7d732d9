"""The config-source service: the config tables (config.*) polled into their compacted topics.

Each table is read by its change column (`updated_at`, set by a trigger on every insert and update): the rows
changed since the last poll go to the table's topic, keyed like every record of it, then the last change is
committed in ops.connect_source_offsets. A crash in between sends the same values again, which the compacted
topic keeps once. A poll only reads changes older than SOURCE_DELAY_MS, so a transaction still committing is
read by the next poll, not missed. A deleted row is not seen (no change time): the topic keeps its last value.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg2 import sql

from smartshelf import logs
from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing
from smartshelf.adapters.redis_clock import redis_client
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.connect import SOURCE_DELAY_MS, SOURCE_POLL_MS, SourceSpec, sources
from smartshelf.registry import table
from smartshelf.schemas import ConnectSourceOffset
from smartshelf.settings import Settings

NAME = "config-source"


def _epoch_ms(ts: datetime) -> int:
    return int(ts.replace(tzinfo=UTC).timestamp() * 1000)


class ConfigSource:
    def __init__(self, settings: Settings) -> None:
        self.specs = sources()
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.producer = self.kafka.producer()
        self.pg = postgres.open_connection(settings)
        with self.pg, self.pg.cursor() as cur:
            cur.execute("SELECT connector, last_change FROM ops.connect_source_offsets")
            self.marks: dict[str, datetime] = dict(cur.fetchall())
        self.published = 0

    def poll(self) -> int:
        """Publish what changed in every table; returns the rows published."""
        before = self.published
        for spec in self.specs:
            self._poll(spec)
        return self.published - before

    def _poll(self, spec: SourceSpec) -> None:
        names = list(spec.table.schema.model_fields)
        assert spec.table.pg is not None
        query = sql.SQL(
            "SELECT {cols}, {change} FROM {table} WHERE {change} > %s "
            "AND {change} < (clock_timestamp() AT TIME ZONE 'UTC') - %s * interval '1 millisecond' "
            "ORDER BY {change}"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, names)), change=sql.Identifier(spec.change_column),
                 table=sql.Identifier(*spec.table.pg.split(".")))
        with self.pg, self.pg.cursor() as cur:
            cur.execute(query, (self.marks.get(spec.name, datetime(1970, 1, 1)), SOURCE_DELAY_MS))
            changed = cur.fetchall()
        if not changed:
            return
        values = [spec.table.schema.model_validate(dict(zip(names, row[:-1], strict=True))) for row in changed]
        self.producer.send_and_wait(
            Outgoing(spec.topic.name, spec.topic.key_of(v).encode(), v.model_dump_json().encode(), _epoch_ms(row[-1]))
            for v, row in zip(values, changed, strict=True))
        last = changed[-1][-1]
        with self.pg, self.pg.cursor() as cur:
            postgres.upsert_rows(cur, table("connect_source_offsets"),
                                 [ConnectSourceOffset(connector=spec.name, last_change=last)])
        self.marks[spec.name] = last
        self.published += len(values)

    def close(self) -> None:
        self.producer.close()
        self.kafka.close()
        self.pg.close()


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    life = Lifecycle(NAME, redis_client(settings))

    def build() -> ConfigSource:
        with life.beating():
            source = ConfigSource(settings)
        logs.info(logger, "started", tables=len(source.specs))
        return source

    def step(source: ConfigSource) -> None:
        source.poll()
        life.pause(SOURCE_POLL_MS / 1000)

    source = serve(life, logger, build, step)
    if source is not None:
        logs.info(logger, "stopped", published=source.published)
        source.close()
