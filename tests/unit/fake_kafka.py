"""A consumed Kafka message as confluent-kafka hands it out, for the unit tests' fake consumers."""

from __future__ import annotations

from confluent_kafka import KafkaError


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None,
                 error: KafkaError | None = None) -> None:
        self._topic, self._partition, self._offset, self._value, self._error = topic, partition, offset, value, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"S0001"

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)  # (TIMESTAMP_CREATE_TIME, epoch ms)

    def headers(self) -> None:
        return None
