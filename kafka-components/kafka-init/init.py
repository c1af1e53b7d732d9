"""Create every topic of the registry (append-only and compacted) on the configured broker. Idempotent."""

from smartshelf.runtime.jobs import kafka_init
from smartshelf.settings import get_settings

if __name__ == "__main__":
    created = kafka_init(get_settings())
    print(f"kafka-init: created {len(created)} topics: {', '.join(created) or '-'}")
