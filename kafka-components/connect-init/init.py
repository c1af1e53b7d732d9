"""Shell (compose): register the JDBC connector configs of kafka-components/kafka-connect/ with a Connect worker.

PUT /connectors/<name>/config creates or updates each, so running it again is harmless. The smartshelf.*
connectors are not sent: the JVM worker cannot run them; the connect-worker service does.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from smartshelf.connect import CONFIG_DIR, SMARTSHELF_CLASSES

CONNECT_URL = "http://kafka-connect:8083"


def put(name: str, config: dict[str, str]) -> None:
    request = urllib.request.Request(f"{CONNECT_URL}/connectors/{name}/config", data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"}, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        print(f"{name}: HTTP {response.status}")


def main() -> int:
    for _ in range(60):  # the worker takes a while to open its REST port
        try:
            urllib.request.urlopen(f"{CONNECT_URL}/connectors", timeout=5).close()
            break
        except (urllib.error.URLError, OSError):
            time.sleep(5)
    else:
        print(f"Kafka Connect did not answer at {CONNECT_URL}", file=sys.stderr)
        return 1
    for path in sorted(CONFIG_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        if document["config"]["connector.class"] not in SMARTSHELF_CLASSES:
            put(document["name"], document["config"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
