"""Shell (compose): register the connector configs of kafka-components/kafka-connect/ with the Connect worker,
once it answers (PUT creates or updates, so running it again is harmless)."""

import sys
import time

from smartshelf.adapters.kafka_connect import ConnectRest
from smartshelf.connect import load_configs
from smartshelf.errors import Unavailable
from smartshelf.settings import get_settings

WAIT_S = 300

if __name__ == "__main__":
    settings = get_settings()
    rest = ConnectRest(f"http://{settings.connect_host}:{settings.connect_port}")
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            for name in rest.register(load_configs()):
                print(f"registered {name}")
            break
        except Unavailable as exc:
            if time.monotonic() > deadline:
                print(f"connect-init: {exc}", file=sys.stderr)
                sys.exit(1)
            time.sleep(5)
