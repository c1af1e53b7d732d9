"""Every setting of the system, read from the environment (and an optional `.env`).

The names are the reference project's env var names, so a docker compose file and the embedded
runtime configure the same things the same way. This is the only module that reads the environment.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from smartshelf.schemas import FIRST_STORE, STORE_ID_PATTERN
from smartshelf.store import MAX_STORES, chain_store_ids

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # where the embedded runtime keeps server data, logs and pid files
    run_dir: Path = Field(REPO_ROOT / "run", alias="SMARTSHELF_RUN_DIR")
    data_dir: Path = Field(REPO_ROOT / "data", alias="SMARTSHELF_DATA_DIR")
    delta_dir: Path = Field(REPO_ROOT / "delta", alias="SMARTSHELF_DELTA_DIR")
    # the jars Maven resolved from conf/jvm/pom.xml, one folder per profile (scripts/bootstrap.sh)
    jvm_dir: Path = Field(REPO_ROOT / ".tools" / "jvm", alias="SMARTSHELF_JVM_DIR")

    # Apache Kafka, one node in KRaft combined mode: clients on KAFKA_PORT, its controller on KAFKA_CONTROLLER_PORT
    kafka_host: str = Field("127.0.0.1", alias="KAFKA_HOST")
    kafka_port: int = Field(9092, alias="KAFKA_PORT")
    kafka_controller_port: int = Field(9093, alias="KAFKA_CONTROLLER_PORT")
    kafka_heap_mb: int = Field(512, alias="KAFKA_HEAP_MB", ge=128)

    # PostgreSQL: the user is the cluster's superuser, as with the official postgres image
    postgres_host: str = Field("127.0.0.1", alias="POSTGRES_HOST")
    postgres_port: int = Field(5432, alias="POSTGRES_PORT")
    postgres_db: str = Field("smart_shelf", alias="POSTGRES_DB")
    postgres_user: str = Field("bdt_user", alias="POSTGRES_USER")
    postgres_password: str = Field("bdt_password", alias="POSTGRES_PASSWORD")
    # services write as the app role; the dashboard and SQL users read as the read-only role
    postgres_app_user: str = Field("smartshelf_app", alias="POSTGRES_APP_USER")
    postgres_app_password: str = Field("smartshelf_app", alias="POSTGRES_APP_PASSWORD")
    postgres_reader_user: str = Field("smartshelf_reader", alias="POSTGRES_READER_USER")
    postgres_reader_password: str = Field("smartshelf_reader", alias="POSTGRES_READER_PASSWORD")

    redis_host: str = Field("127.0.0.1", alias="REDIS_HOST")
    redis_port: int = Field(6379, alias="REDIS_PORT")
    # Redis's memory cap (noeviction: it never drops an entry); the producers stop writing at half of it until
    # the bridge has drained the streams (smartshelf.apps.producers)
    redis_maxmemory_mb: int = Field(256, alias="REDIS_MAXMEMORY_MB", ge=16)

    # simulated clock
    use_simulated_time: bool = Field(False, alias="USE_SIMULATED_TIME")
    time_multiplier: float = Field(1.0, alias="TIME_MULTIPLIER", gt=0)
    step_seconds: int = Field(1, alias="STEP_SECONDS", gt=0)
    sim_days: int = Field(365, alias="SIM_DAYS", gt=0)
    sim_start: datetime = Field(datetime(2025, 1, 1, 8, 0, 0), alias="SIM_START")
    # demo: wall-clock paced; fast: lockstep with the pipeline, reproducible (smartshelf.clock)
    sim_mode: Literal["demo", "fast"] = Field("demo", alias="SIM_MODE")
    sim_seed: int = Field(42, alias="SIM_SEED")  # seeds the customers' behaviour (the world)

    # Spark streaming
    max_offsets_per_trigger: int | None = Field(None, alias="MAX_OFFSETS_PER_TRIGGER", gt=0)
    starting_offsets: str = Field("earliest", alias="STARTING_OFFSETS", pattern="^(earliest|latest)$")
    # all apps in one shared query (default), or one query per app as compose runs them (docs/architecture.md)
    spark_query_per_app: bool = Field(False, alias="SPARK_QUERY_PER_APP")
    spark_trigger_ms: int = Field(1000, alias="SPARK_TRIGGER_MS", ge=0)
    # the keyed query's state store keys: the shelves hashed into this many buckets (smartshelf.streaming.keyed).
    # Fixed for the life of a run's checkpoint; raise it for a chain of stores (a bucket's value holds its shelves)
    keyed_buckets: int = Field(64, alias="KEYED_BUCKETS", ge=1, le=65536)
    # where the apps' executors run: local threads of the driver (default), or a Spark standalone cluster
    # (spark://host:port, e.g. compose's `spark-cluster` profile). SPARK_WORKERS > 0 makes the embedded stack
    # start a standalone master on SPARK_MASTER_PORT and that many workers on 127.0.0.1, and the apps use it
    spark_master: str = Field("local[2]", alias="SPARK_MASTER", pattern=r"^(local(\[(\d+|\*)\])?|spark://.+)$")
    spark_workers: int = Field(0, alias="SPARK_WORKERS", ge=0, le=8)
    spark_master_port: int = Field(7077, alias="SPARK_MASTER_PORT")
    spark_worker_memory_mb: int = Field(1536, alias="SPARK_WORKER_MEMORY_MB", ge=768)
    # a Delta table written by an app is maintained (compacted, vacuumed, its log checkpointed) after every
    # DELTA_MAINTAIN_EVERY commits the app makes to it (smartshelf.adapters.delta.maintain)
    delta_maintain_every: int = Field(20, alias="DELTA_MAINTAIN_EVERY", ge=1)

    # the closed loop: a restock reaches the shelf this long after it leaves the warehouse; near-expiry
    # discounts and removals of expired lots run daily at STORE_OPS_HOUR, before the store opens
    refill_delay_minutes: int = Field(30, alias="REFILL_DELAY_MINUTES", ge=0)
    store_ops_hour: int = Field(6, alias="STORE_OPS_HOUR", ge=0, le=23)

    # how far a sensor event's time may be from the simulated clock when the bridge takes it (smartshelf.ingress,
    # EventWindow); beyond it the event is a dead letter with the reason. Ahead: the sensors write only events the
    # clock has reached, so any lead is a wrong clock, and one far ahead would block its shelf's restocks until
    # then. Late: a backlog the bridge catches up on after an outage is legitimately late, so the default is a
    # simulated week (17 h of outage at TIME_MULTIPLIER=10); only a clock that is far off is refused.
    max_event_ahead_minutes: int = Field(60, alias="MAX_EVENT_AHEAD_MINUTES", ge=0)
    max_event_late_minutes: int = Field(7 * 24 * 60, alias="MAX_EVENT_LATE_MINUTES", ge=0)

    # the store's pulse (smartshelf.pulse): event-time windows, anomaly and shrinkage alerts. A window closes once
    # the events have gone PULSE_WATERMARK_MINUTES past its end, plus one clock step (in fast mode a whole tick's
    # events arrive together, in any topic order), plus at demo speed 30 wall seconds of the clock's
    # (smartshelf.streaming.pulse.watermark_delay); an event arriving after its window closed is dropped, counted.
    pulse_watermark_minutes: int = Field(2, alias="PULSE_WATERMARK_MINUTES", ge=0, le=24 * 60)
    pulse_trigger_ms: int = Field(10_000, alias="PULSE_TRIGGER_MS", ge=0)
    # an anomaly: a 5-minute window whose |z| against the same hour of earlier days reaches the threshold and
    # that is PULSE_MIN_DEVIATION away from the level, once that hour has been seen on PULSE_MIN_HISTORY_DAYS
    # days; the last PULSE_HISTORY_DAYS days are kept
    pulse_z_threshold: float = Field(4.0, alias="PULSE_Z_THRESHOLD", gt=0)
    pulse_min_deviation: float = Field(10.0, alias="PULSE_MIN_DEVIATION", ge=0)  # people or units per 5 minutes
    pulse_min_history_days: int = Field(2, alias="PULSE_MIN_HISTORY_DAYS", ge=1)
    pulse_history_days: int = Field(14, alias="PULSE_HISTORY_DAYS", ge=1)
    # shrinkage: a shelf's customers took (by its scale) this many units more than they paid for in 5 minutes
    shrinkage_min_units: int = Field(10, alias="SHRINKAGE_MIN_UNITS", ge=1)
    # injected happenings of the simulated world (smartshelf.world, Scenario): "kind@time", comma-separated
    sim_scenarios: str = Field("", alias="SIM_SCENARIOS")

    # Kafka Connect (smartshelf.connect): its REST API on http://CONNECT_HOST:CONNECT_PORT, its JVM's heap
    connect_host: str = Field("127.0.0.1", alias="CONNECT_HOST")
    connect_port: int = Field(8083, alias="CONNECT_PORT")
    connect_heap_mb: int = Field(256, alias="CONNECT_HEAP_MB", ge=128, le=512)

    # the Streamlit dashboard (http://127.0.0.1:DASHBOARD_PORT)
    dashboard_port: int = Field(8501, alias="DASHBOARD_PORT")

    # the live API (smartshelf.api): REST and the WebSocket event feed on http://API_HOST:API_PORT
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT")
    # events a WebSocket client may have queued before it is closed as too slow (the others are not slowed); the
    # queues hold references to events shared by every client, so a long one costs pointers, not copies
    api_ws_queue: int = Field(10_000, alias="API_WS_QUEUE", ge=2)
    api_db_pool: int = Field(8, alias="API_DB_POOL", ge=1)  # PostgreSQL connections of the API (reader role)
    # the stores this twin runs: STORE_ID alone, or with STORES > 1 the first STORES stores of a generated chain
    # (store-001, store-002, …: `smartshelf data generate --stores N`), STORE_ID among them; STORE_ID is the store
    # the API, the dashboard and the views show
    store_id: str = Field(FIRST_STORE, alias="STORE_ID", pattern=STORE_ID_PATTERN)
    stores: int = Field(1, alias="STORES", ge=1, le=MAX_STORES)
    # a store's topics get a partition per this many stores (kafka-init; registry.Topic.partitions_for_stores)
    stores_per_partition: int = Field(4, alias="STORES_PER_PARTITION", ge=1)

    # ML inference runs once per simulated day at this hour
    run_hour: int = Field(6, alias="RUN_HOUR", ge=0, le=23)
    # the replenishment model: trained files under ARTIFACT_DIR/MODEL_NAME/<version>/ (smartshelf.ml.artifacts),
    # ARTIFACT_DIR by default the run directory's models/
    model_name: str = Field("replenishment_xgb", alias="MODEL_NAME")
    # the restock-risk classifier (smartshelf.ml.risk), under ARTIFACT_DIR too; the shelf aggregator scores with
    # its newest version once there is one
    risk_model_name: str = Field("restock_risk_xgb", alias="RISK_MODEL_NAME")
    # whose plans the supplier manager orders: the reorder rule's, or the model's forecast (smartshelf.loop)
    supplier_policy: Literal["rules", "ml"] = Field("rules", alias="SUPPLIER_POLICY")
    artifact_dir_setting: Path | None = Field(None, alias="ARTIFACT_DIR")
    # MLflow: every training run is also logged to this tracking store (by default SQLite in the run directory's
    # mlflow/, the artifacts beside it), whose UI `smartshelf up` serves on http://127.0.0.1:MLFLOW_PORT
    mlflow_tracking_uri_setting: str | None = Field(None, alias="MLFLOW_TRACKING_URI")
    mlflow_port: int = Field(5001, alias="MLFLOW_PORT")

    # the watchdog (smartshelf up) kills and restarts a running service whose heartbeat is this old: stopped
    # (SIGSTOP) or hung; a crashed one it restarts at once
    watchdog_hung_after_s: float = Field(60.0, alias="WATCHDOG_HUNG_AFTER_S", ge=20)
    # and keeps each process's log under run/logs at most this size, plus one older copy (<name>.log.1)
    log_max_mb: int = Field(50, alias="LOG_MAX_MB", ge=1)

    log_level: str = Field("WARNING", alias="SMARTSHELF_LOG_LEVEL")
    # failure drills: a service that reaches the named point dies at once, as if killed (bridge.after_send;
    # spark.exit_after_publish and spark.exit_after_commit once per run), or fails there
    # once per app (spark.fail_after_publish): smartshelf.streaming.commit
    crash_point: str | None = Field(None, alias="SMARTSHELF_CRASH_POINT")

    @model_validator(mode="after")
    def _store_among_stores(self) -> Settings:
        if self.store_id not in self.running_stores:
            raise ValueError(f"STORE_ID {self.store_id} is not among the {self.stores} stores this twin runs "
                             f"({self.running_stores[0]} to {self.running_stores[-1]})")
        return self

    @property
    def running_stores(self) -> list[str]:
        """The stores this twin runs, in order (see STORES)."""
        return chain_store_ids(self.stores) if self.stores > 1 else [self.store_id]

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables, so a child process (a service, the CLI) sees the same."""
        env = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if info.alias is None or value is None:
                continue
            env[info.alias] = value.isoformat() if isinstance(value, datetime) else str(int(value)) \
                if isinstance(value, bool) else str(value)
        return env

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def spark_master_url(self) -> str:
        """The master the apps' SparkSession connects to."""
        return f"spark://127.0.0.1:{self.spark_master_port}" if self.spark_workers else self.spark_master

    @property
    def artifact_dir(self) -> Path:
        return self.artifact_dir_setting or self.run_dir / "models"

    @property
    def mlflow_dir(self) -> Path:
        return self.run_dir / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri_setting or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def postgres_dsn(self) -> str:
        """The superuser's DSN (migrations); services use `postgres_dsn_for`."""
        return self.postgres_dsn_for("admin")

    def postgres_dsn_for(self, role: str) -> str:
        user, password = {
            "admin": (self.postgres_user, self.postgres_password),
            "app": (self.postgres_app_user, self.postgres_app_password),
            "reader": (self.postgres_reader_user, self.postgres_reader_password),
        }[role]
        return f"postgresql://{user}:{password}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
