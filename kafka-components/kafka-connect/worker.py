"""Shell (compose's kafka-connect): Apache Kafka Connect in distributed mode, as the embedded stack runs it
(smartshelf.runtime.servers.KafkaConnect); connect-init registers the connector configs in this folder."""

import os

from smartshelf.runtime.servers import KafkaConnect
from smartshelf.settings import get_settings

if __name__ == "__main__":
    worker = KafkaConnect(get_settings())
    worker.prepare()
    argv = worker.argv()
    os.execvpe(argv[0], argv, {**os.environ, **worker.env()})
