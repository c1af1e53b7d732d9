"""Shell: Redis Streams to Kafka, exactly once, invalid events to dead_letters (smartshelf.apps.bridge)."""

from smartshelf.apps.bridge import main
from smartshelf.settings import get_settings

if __name__ == "__main__":
    main(get_settings())
