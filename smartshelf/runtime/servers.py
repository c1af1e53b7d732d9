"""The embedded servers: how each is found, prepared, started and health-checked.

Each server is a real process (Apache Kafka, PostgreSQL, Redis; with SPARK_WORKERS, a Spark standalone master and
workers) bound to 127.0.0.1. The supervisor
(`smartshelf.runtime.supervisor`) owns their lifecycle; this module only knows what each one needs.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from smartshelf.errors import SmartShelfError
from smartshelf.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from smartshelf.adapters.kafka_connect import ConnectRest

@dataclass
class ServerPaths:
    data: Path
    log: Path


class Server:
    """Base: subclasses say how to prepare, run and probe one server."""

    name: ClassVar[str]
    depends_on: ClassVar[tuple[str, ...]] = ()
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM  # asks it to stop cleanly
    beats: ClassVar[bool] = False  # it beats a heartbeat in Redis while it works (smartshelf.apps.lifecycle)
    start_timeout_s: ClassVar[float] = 60.0  # from spawn to healthy

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def port(self) -> int | None:
        """The port it listens on (None: a service that listens on none)."""
        raise NotImplementedError

    def paths(self) -> ServerPaths:
        return ServerPaths(
            data=self.settings.run_dir / self.name,
            log=self.settings.run_dir / "logs" / f"{self.name}.log",
        )

    def run_as(self) -> str | None:
        """The OS user the server must run as (None: the current user)."""
        return None

    def prepare(self) -> None:
        """Create the data directory (and anything else needed before the first start)."""
        self.paths().data.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def probe(self) -> None:
        """Raise if the server does not answer its own protocol."""
        raise NotImplementedError

    def after_start(self) -> None:
        """One-time work once the server answers (e.g. create the database)."""

    def heal(self) -> list[str]:
        """Repair what the server does not repair itself while it runs (the watchdog calls it); returns what was
        repaired, and why it had to be."""
        return []


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _require_executable(path: str | Path | None, what: str, how_to_get: str) -> str:
    if not path or not os.access(path, os.X_OK):
        raise SmartShelfError(f"{what} not found ({how_to_get}); run `make up`, which installs it")
    return str(path)


def java_executable() -> str:
    """The JVM the embedded broker runs on: $JAVA_HOME's, else the one on PATH (Kafka 4 needs Java 17+)."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    return _require_executable(candidate, "java", "Debian package openjdk-17-jre-headless")


def jvm_classpath(settings: Settings, profile: str) -> str:
    """The jars Maven resolved for one profile of conf/jvm/pom.xml (scripts/bootstrap.sh), as a classpath."""
    folder = settings.jvm_dir / profile
    if not any(folder.glob("*.jar")):
        raise SmartShelfError(f"no JVM jars for '{profile}' in {folder} (Maven, conf/jvm/pom.xml); run `make up`")
    return str(folder / "*")


# KRaft needs a cluster id (a base64 UUID) when the storage is formatted; one fixed id: the embedded cluster is
# always one node, formatted once, and a fixed id makes every run's storage alike
KAFKA_CLUSTER_ID = "c21hcnRzaGVsZi1rYWZrYQ"  # base64url of b"smartshelf-kafka"


class KafkaBroker(Server):
    """Apache Kafka in KRaft combined mode (one node: broker and controller), on 127.0.0.1 only.

    The storage is formatted once (`kafka.tools.StorageTool format --standalone`), then `kafka.Kafka` runs with
    the properties written by `prepare`. The log cleaner compacts the compacted topics (registry)."""

    name = "kafka"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    def _properties_path(self) -> Path:
        return self.paths().data / "server.properties"

    def properties(self) -> dict[str, str]:
        broker = f"127.0.0.1:{self.port}"
        controller = f"127.0.0.1:{self.settings.kafka_controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.paths().data / "logs"),
            "auto.create.topics.enable": "false",  # every topic comes from the registry (kafka-init)
            # one node: every internal topic has one replica
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # bounded disk by size only: append-only topics keep at most 1 GiB per partition. Not by time: records
            # carry simulated event times (a demo starts in 2025), which time-based retention would delete at
            # its first check, unread (seen: the producers' feedback reads stopped at a moved log start)
            "log.retention.ms": "-1",
            "log.retention.bytes": str(1 << 30),
            "log.segment.bytes": str(64 << 20),
            "log.cleaner.dedupe.buffer.size": str(32 << 20),
        }

    def prepare(self) -> None:
        data = self.paths().data
        data.mkdir(parents=True, exist_ok=True)
        self._properties_path().write_text(
            "".join(f"{key}={value}\n" for key, value in self.properties().items()))
        if (data / "logs" / "meta.properties").exists():
            return
        result = subprocess.run(
            [*self._java(), "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
             "--cluster-id", KAFKA_CLUSTER_ID, "--config", str(self._properties_path())],
            capture_output=True, text=True, env={**os.environ, **self.env()},
        )
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise SmartShelfError(f"kafka: formatting the storage failed: {last}")

    def _java(self) -> list[str]:
        log_config = REPO_ROOT / "conf" / "jvm" / "log4j2.yaml"
        return [java_executable(), "-Xms256m", f"-Xmx{self.settings.kafka_heap_mb}m", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log_config}", "-cp", jvm_classpath(self.settings, "kafka")]

    def argv(self) -> list[str]:
        return [*self._java(), "kafka.Kafka", str(self._properties_path())]

    def probe(self) -> None:
        from smartshelf.adapters.kafka import broker_answers

        broker_answers(f"127.0.0.1:{self.port}")


def spark_class() -> str:
    """pyspark's launcher of Spark's JVM classes (the installed wheel is a whole Spark distribution)."""
    import pyspark

    return _require_executable(Path(pyspark.__file__).parent / "bin" / "spark-class", "spark-class",
                               "the pyspark wheel")


def log_since_start(server: Server) -> str:
    """The server's log from its latest start on (the supervisor marks each start)."""
    log = server.paths().log
    text = log.read_text(errors="replace") if log.exists() else ""
    return text[text.rfind("\n--- start "):]


class SparkStandalone(Server):
    """A process of a Spark standalone cluster on 127.0.0.1, from the installed pyspark, on the project's Java."""

    def env(self) -> dict[str, str]:
        java_home = Path(os.path.realpath(java_executable())).parent.parent
        return {"JAVA_HOME": str(java_home), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOCAL_DIRS": str(self.paths().data / "tmp"), "PYSPARK_PYTHON": sys.executable,
                "SPARK_DAEMON_MEMORY": "256m"}

    def prepare(self) -> None:
        (self.paths().data / "tmp").mkdir(parents=True, exist_ok=True)

    def _said(self, line: str) -> None:
        if line not in log_since_start(self):
            raise SmartShelfError(f"{self.name} has not logged '{line}' yet")


class SparkMaster(SparkStandalone):
    """The standalone master (SPARK_WORKERS > 0); its web UI on a free port."""

    name = "spark-master"

    @property
    def port(self) -> int:
        return self.settings.spark_master_port

    def argv(self) -> list[str]:
        return [spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                "--port", str(self.port), "--webui-port", "0"]

    def probe(self) -> None:
        self._said("I have been elected leader!")


class SparkWorker(SparkStandalone):
    """A standalone worker with one core and SPARK_WORKER_MEMORY_MB; its executors are its child processes."""

    depends_on = ("spark-master",)

    @property
    def port(self) -> None:
        return None  # a free port of its own choosing: the master knows it

    def argv(self) -> list[str]:
        return [spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--cores", "1", "--memory", f"{self.settings.spark_worker_memory_mb}m", "--webui-port", "0",
                "--work-dir", str(self.paths().data / "work"), self.settings.spark_master_url]

    def probe(self) -> None:
        self._said("Successfully registered with master")


def spark_cluster(settings: Settings) -> list[Server]:
    """The embedded standalone cluster: none unless SPARK_WORKERS > 0, else a master and its workers."""
    if not settings.spark_workers:
        return []
    workers = [type(f"SparkWorker{i}", (SparkWorker,), {"name": f"spark-worker-{i}"})(settings)
               for i in range(1, settings.spark_workers + 1)]
    return [SparkMaster(settings), *workers]


def postgres_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise SmartShelfError("PostgreSQL server binaries not found (Debian package postgresql); run `make up`")
    return Path(candidates[-1]).parent


class Postgres(Server):
    """Debian's PostgreSQL; as root it runs as the `postgres` OS user, which the package creates."""

    name = "postgres"
    # fast shutdown: SIGTERM is PostgreSQL's *smart* shutdown, which waits for every client to leave; with a
    # service or a psql session still connected it never ended, and the supervisor killed it after its timeout
    stop_signal = signal.SIGINT

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    def run_as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _chown_for_server(self, path: Path) -> None:
        user = self.run_as()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def prepare(self) -> None:
        data = self.paths().data
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        self._chown_for_server(data)
        _check_traversable(data, self.run_as())
        password_file = data.parent / "postgres.pwfile"
        password_file.write_text(self.settings.postgres_password + "\n")
        self._chown_for_server(password_file)
        try:
            result = subprocess.run(
                [
                    str(postgres_bindir() / "initdb"), "-D", str(data), "-U", self.settings.postgres_user,
                    f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-locale",
                ],
                capture_output=True, text=True, user=self.run_as(),
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise SmartShelfError(f"postgres: initdb failed: {result.stderr.strip().splitlines()[-1:]}")

    def argv(self) -> list[str]:
        return [
            str(postgres_bindir() / "postgres"), "-D", str(self.paths().data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=100", "-c", "shared_buffers=128MB",
            # Debezium's source reads the config tables' changes by logical decoding; a slot whose reader is
            # away keeps WAL for it, at most this much (then the slot is dropped and the source snapshots again)
            "-c", "wal_level=logical", "-c", "max_replication_slots=4", "-c", "max_wal_senders=4",
            "-c", "max_slot_wal_keep_size=256MB",
        ]

    def _connect(self, dbname: str):  # type: ignore[no-untyped-def]
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname=dbname, user=self.settings.postgres_user,
            password=self.settings.postgres_password, connect_timeout=2,
        )

    def probe(self) -> None:
        with self._connect("postgres") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    def after_start(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres_db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.settings.postgres_db}"')
        finally:
            conn.close()


def _check_traversable(path: Path, user: str | None) -> None:
    """The server user must be able to reach its data dir through every parent."""
    if user is None:
        return
    for parent in path.parents:
        if parent.stat().st_mode & 0o001 == 0:
            raise SmartShelfError(
                f"postgres runs as OS user '{user}', who cannot enter {parent}; "
                f"choose a SMARTSHELF_RUN_DIR whose parents are world-traversable"
            )


class Redis(Server):
    """Debian's redis-server with an append-only file, so a restart keeps the streams and the clock, and a memory
    cap that evicts nothing (a write past it fails; the producers stop well before: smartshelf.apps.producers).

    `appendfsync always`: with `everysec`, Redis may postpone the AOF write while a background fsync runs
    and still acknowledge the command, so a kill -9 can lose acknowledged stream entries (seen in tests).
    """

    name = "redis"

    @property
    def port(self) -> int:
        return self.settings.redis_port

    def argv(self) -> list[str]:
        redis_server = _require_executable(shutil.which("redis-server"), "redis-server", "Debian package redis-server")
        return [
            redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.paths().data),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--maxmemory", f"{self.settings.redis_maxmemory_mb}mb", "--maxmemory-policy", "noeviction",
        ]

    def probe(self) -> None:
        import redis

        if not redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2).ping():
            raise SmartShelfError("redis did not answer PING")


class OwnService(Server):
    """A process of ours (not a server we install): it runs in the run directory, logs under run/logs, and sees
    the same settings as the process that starts it."""

    def paths(self) -> ServerPaths:
        return ServerPaths(data=self.settings.run_dir, log=self.settings.run_dir / "logs" / f"{self.name}.log")

    def env(self) -> dict[str, str]:
        return self.settings.as_env()


class PythonService(OwnService):
    """One of our own long-running services: a shell script under the repo run by the venv's Python.

    It listens on no port; it is healthy while it beats its heartbeat in Redis (smartshelf.apps.lifecycle).
    """

    script: ClassVar[str]  # relative to the repository root
    beats = True

    @property
    def port(self) -> int | None:
        return None

    def argv(self) -> list[str]:
        return [sys.executable, str(REPO_ROOT / self.script)]

    def probe(self) -> None:
        import redis

        from smartshelf.apps.lifecycle import HEARTBEAT_STALE_S, heartbeat_age

        age = heartbeat_age(redis.Redis(host="127.0.0.1", port=self.settings.redis_port, socket_timeout=2), self.name)
        if age is None or age > HEARTBEAT_STALE_S:
            raise SmartShelfError(f"no heartbeat from {self.name}" + (f" for {age:.0f}s" if age is not None else ""))


class ClockService(PythonService):
    name = "clock"
    script = "simulated_time/clock.py"
    depends_on = ("kafka", "redis")


class ProducersService(PythonService):
    name = "producers"
    script = "kafka-components/producers/app.py"
    depends_on = ("postgres", "redis")


class BridgeService(PythonService):
    name = "bridge"
    script = "kafka-components/redis-kafka-bridge/app.py"
    depends_on = ("kafka", "redis")


CONNECTORS_START_S = 120.0


class KafkaConnect(Server):
    """Apache Kafka Connect in distributed mode, running the mirror's sinks (Debezium's JDBC sink) and the config
    tables' source (Debezium's PostgreSQL connector), as smartshelf.connect configures them; its state (configs,
    offsets, statuses) in the broker's internal topics. Once it answers, the connector configs of
    kafka-components/kafka-connect/ are registered (what `connect-init` does in compose). Healthy while its REST
    API answers and no connector or task has failed."""

    name = "connect"
    depends_on = ("kafka", "postgres")
    # a JVM that loads Connect, Debezium and Hibernate: 15-45 s here, longer on a machine busy with the rest
    start_timeout_s = 180.0

    @property
    def port(self) -> int:
        return self.settings.connect_port

    def _properties_path(self) -> Path:
        return self.paths().data / "worker.properties"

    def prepare(self) -> None:
        from smartshelf.connect import worker_properties

        self.paths().data.mkdir(parents=True, exist_ok=True)
        self._properties_path().write_text(
            "".join(f"{key}={value}\n" for key, value in worker_properties(self.settings).items()))

    def argv(self) -> list[str]:
        log_config = REPO_ROOT / "conf" / "jvm" / "log4j2.yaml"
        # a footprint for 2 cores (bench connect, docs/architecture.md): the serial collector and C1 alone keep
        # no concurrent GC or C2 compiler threads and their memory; the sinks' throughput stayed where it was
        return [java_executable(), "-Xms64m", f"-Xmx{self.settings.connect_heap_mb}m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=64m", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log_config}", "-cp", jvm_classpath(self.settings, "connect"),
                "org.apache.kafka.connect.cli.ConnectDistributed", str(self._properties_path())]

    def env(self) -> dict[str, str]:
        # the configs read PostgreSQL's address and credentials with ${env:...}; two malloc arenas, not 8 per core
        return {**self.settings.as_env(), "MALLOC_ARENA_MAX": "2"}

    def _rest(self) -> ConnectRest:
        from smartshelf.adapters.kafka_connect import ConnectRest

        return ConnectRest(f"http://{self.settings.connect_host}:{self.port}")

    def probe(self) -> None:
        from smartshelf.adapters.kafka_connect import failures

        if failed := failures(self._rest().statuses()):
            raise SmartShelfError("failed: " + "; ".join(failed))

    def after_start(self) -> None:
        """Register the connectors, then wait until each runs its task (or say which did not)."""
        from smartshelf.adapters.kafka_connect import not_running
        from smartshelf.connect import load_configs

        rest = self._rest()
        names = rest.register(load_configs())
        deadline = time.monotonic() + CONNECTORS_START_S
        while waiting := not_running(rest.statuses(), names) or self._unsourced():
            if time.monotonic() > deadline:
                raise SmartShelfError(f"connect: not running after {CONNECTORS_START_S:.0f}s: {', '.join(waiting)}")
            time.sleep(0.5)

    def heal(self) -> list[str]:
        """Connect leaves a failed connector or task failed (Debezium's sink fails its task on a database error
        its retries did not outlast): restart them."""
        return self._rest().restart_failed()

    def _unsourced(self) -> list[str]:
        """The config tables that hold rows while their topic is still empty: the source's first snapshot has
        not reached them yet (what the apps read first is the store's configuration, not a default)."""
        from smartshelf.adapters import postgres
        from smartshelf.adapters.kafka import KafkaAdapter
        from smartshelf.connect import sourced_tables

        kafka = KafkaAdapter(self.settings.kafka_bootstrap_servers)
        try:
            with postgres.connect(self.settings, "app") as conn, conn.cursor() as cur:
                filled = [t for t in sourced_tables() if postgres.count_rows(cur, t)]
            return [f"{t.topic} (snapshot)" for t in filled
                    if not any(kafka.end_offsets(kafka.partitions_for(str(t.topic))).values())]
        finally:
            kafka.close()


class SparkService(PythonService):
    """Every streaming app, each its own query, in one SparkSession (spark-apps/runner)."""

    name = "spark"
    script = "spark-apps/runner/app.py"
    depends_on = ("kafka", "postgres", "redis")


class DashboardService(OwnService):
    """The Streamlit dashboard (dashboard/app.py): it reads, so it needs the stores, not the pipeline."""

    name = "dashboard"
    depends_on = ("postgres", "redis")

    @property
    def port(self) -> int:
        return self.settings.dashboard_port

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "dashboard" / "app.py"),
            "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={self.port}",
            "--browser.gatherUsageStats=false", "--server.fileWatcherType=none", "--client.toolbarMode=viewer",
        ]

    def probe(self) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as response:
            if response.status != 200:
                raise SmartShelfError(f"dashboard answered HTTP {response.status}")


class ApiService(OwnService):
    """The live API (api/app.py): REST over PostgreSQL and the WebSocket feed from Kafka."""

    name = "api"
    depends_on = ("kafka", "postgres", "redis")

    @property
    def port(self) -> int:
        return self.settings.api_port

    def argv(self) -> list[str]:
        return [sys.executable, str(REPO_ROOT / "api" / "app.py")]

    def probe(self) -> None:
        """It answers HTTP; /health may be 503 while a dependency is down, and the API still serves that."""
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise SmartShelfError(f"api answered HTTP {exc.code}") from exc


class MlflowService(OwnService):
    """MLflow's tracking server and UI over the store the training runs are logged to (smartshelf.adapters.
    mlflow_tracking): the `mlflow server` command, one uvicorn worker, without MLflow's job runner (GenAI
    evaluation jobs, seven more processes that nothing here uses)."""

    name = "mlflow"
    start_timeout_s = 90.0  # a first start creates and migrates the SQLite store

    @property
    def port(self) -> int:
        return self.settings.mlflow_port

    def prepare(self) -> None:
        if not self.settings.mlflow_tracking_uri.startswith("sqlite:///"):
            raise SmartShelfError(f"MLFLOW_TRACKING_URI is {self.settings.mlflow_tracking_uri}: `smartshelf up`"
                                  " serves a local SQLite store only (unset it, or use that server's own UI)")
        (self.settings.mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.settings.mlflow_tracking_uri,
                "--default-artifact-root", (self.settings.mlflow_dir / "artifacts").resolve().as_uri(),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]

    def env(self) -> dict[str, str]:
        return {**super().env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def probe(self) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
            if response.status != 200:
                raise SmartShelfError(f"mlflow answered HTTP {response.status}")


class InferenceService(PythonService):
    name = "inference"
    script = "ml-model/inference-service/app.py"
    depends_on = ("kafka", "postgres", "redis")


class WatchdogService(PythonService):
    """Restarts any process of the stack that has died (smartshelf.runtime.watchdog); `smartshelf up` only."""

    name = "watchdog"
    depends_on = ("redis",)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "smartshelf.runtime.watchdog"]


class WatchdogStandbyService(WatchdogService):
    """Restarts the watchdog when it has died or hung (the watchdog restarts this one)."""

    name = "watchdog-standby"

    def argv(self) -> list[str]:
        return [*super().argv(), "--standby"]


SERVER_CLASSES: tuple[type[Server], ...] = (KafkaBroker, Postgres, Redis)
# started after the servers, their init jobs and the store import (smartshelf up); the watchdogs last, so that
# `smartshelf down`, which stops in reverse order, stops them first
SERVICE_CLASSES: tuple[type[Server], ...] = (SparkService, KafkaConnect, ProducersService, BridgeService,
                                              ClockService, InferenceService, MlflowService, DashboardService,
                                              ApiService, WatchdogService, WatchdogStandbyService)


def all_servers(settings: Settings) -> list[Server]:
    """The infrastructure servers, in start order (dependencies first)."""
    return [*(cls(settings) for cls in SERVER_CLASSES), *spark_cluster(settings)]


def all_processes(settings: Settings) -> list[Server]:
    """Servers, then services: everything the supervisor may run, in start order."""
    return [*all_servers(settings), *(cls(settings) for cls in SERVICE_CLASSES)]


def service_names() -> list[str]:
    return [cls.name for cls in SERVICE_CLASSES]
