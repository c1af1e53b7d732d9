"""The one registry of deployable services: what docker compose runs, and what plays that role embedded.

docker-compose.yml must name exactly these services with these profiles (checked by a test), so the
scale-out path and the embedded default cannot drift apart. Later capabilities add their services here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Profile(StrEnum):
    INFRA = "infra"
    PRODUCERS = "producers"
    SPARK = "spark"
    SPARK_CLUSTER = "spark-cluster"
    CONNECT = "connect"
    ML = "ml"
    DASHBOARD = "dashboard"
    API = "api"


@dataclass(frozen=True)
class Service:
    name: str
    profile: Profile
    embedded_by: str  # the embedded server or job (smartshelf.runtime) that plays this role
    summary: str


SERVICES: tuple[Service, ...] = (
    Service("kafka", Profile.INFRA, "kafka", "Kafka broker; embedded: Apache Kafka (KRaft, one node)"),
    Service("postgres", Profile.INFRA, "postgres", "PostgreSQL: ref, config, state, ops, analytics"),
    Service("redis", Profile.INFRA, "redis", "Redis: simulated clock and producer streams"),
    Service("kafka-init", Profile.INFRA, "kafka-init", "creates every topic of the registry (one-shot)"),
    Service("db-init", Profile.INFRA, "db-init", "applies the SQL migrations in postgresql/ (one-shot)"),
    Service("delta-init", Profile.INFRA, "delta-init", "bootstraps the empty Delta tables (one-shot)"),
    Service("store-init", Profile.INFRA, "store-init", "loads the store CSVs (seed 42 if none) unless loaded (one-shot)"),
    Service("sim-clock", Profile.PRODUCERS, "clock", "the simulated clock in Redis (sim:now, sim:today)"),
    Service("producers", Profile.PRODUCERS, "producers", "the store's sensors: foot traffic, shelf, POS → Redis Streams"),
    Service("redis-kafka-bridge", Profile.PRODUCERS, "bridge", "Redis Streams → Kafka, exactly once; dead letters"),
    # compose runs one container per app, as the reference did; embedded, one SparkSession runs them all
    Service("shelf-aggregator", Profile.SPARK, "spark", "shelf_events → shelf_state (compacted topic; keyed state)"),
    Service("batch-state-updater", Profile.SPARK, "spark", "pos_transactions → shelf_batch_state, FIFO by expiry"),
    Service("wh-aggregator", Profile.SPARK, "spark", "wh_events → wh_state (compacted topic; keyed state)"),
    Service("wh-batch-state-updater", Profile.SPARK, "spark", "wh_events → wh_batch_state (compacted topic; keyed state)"),
    # the closed loop
    Service("shelf-alert-engine", Profile.SPARK, "spark", "shelf_events → alerts + shelf_restock_plan (low stock, out of stock; keyed state)"),
    Service("wh-alert-engine", Profile.SPARK, "spark", "wh_events → alerts + wh_supplier_plan (reorder point, out of stock; keyed state)"),
    Service("shelf-restock-manager", Profile.SPARK, "spark", "shelf_restock_plan → wh_events (wh_out), warehouse lots FIFO by expiry"),
    Service("shelf-refill-bridge", Profile.SPARK, "spark", "wh_events (wh_out) → shelf_events (staff putback) after REFILL_DELAY_MINUTES"),
    Service("wh-supplier-manager", Profile.SPARK, "spark", "wh_supplier_plan → supplier orders; deliveries → wh_events (wh_in), receipts"),
    Service("daily-discount-manager", Profile.SPARK, "spark", "near-expiry lots → daily_discounts (STORE_OPS_HOUR; keyed state)"),
    Service("removal-scheduler", Profile.SPARK, "spark", "expired lots → staff pickups and wh_removal, expired alerts (STORE_OPS_HOUR; keyed state)"),
    Service("lake-sink", Profile.SPARK, "spark",
            "event, ops and analytics topics → Delta raw/ops/analytics (delta-spark: appends, merges by key)"),
    # the store's pulse (smartshelf.pulse): Spark's window operators on event time, a query of its own
    Service("pulse", Profile.SPARK, "spark",
            "foot_traffic, pos_transactions, shelf_events → 1-min and 5-min sliding windows (pulse_windows), "
            "anomaly and shrinkage alerts"),
    # a Spark standalone cluster for the apps (SPARK_MASTER=spark://spark-master:7077); embedded: SPARK_WORKERS=2
    Service("spark-master", Profile.SPARK_CLUSTER, "spark-master", "Spark standalone master (port 7077)"),
    Service("spark-worker-1", Profile.SPARK_CLUSTER, "spark-worker-1", "Spark standalone worker: 1 core, its executors"),
    Service("spark-worker-2", Profile.SPARK_CLUSTER, "spark-worker-2", "Spark standalone worker: 1 core, its executors"),
    # the PostgreSQL mirror: Apache Kafka Connect with Debezium's JDBC sink, embedded and in compose alike
    Service("kafka-connect", Profile.CONNECT, "connect", "Kafka Connect, Debezium's connectors: topics → PostgreSQL, config tables → topics"),
    Service("connect-init", Profile.CONNECT, "connect", "registers the sink connector configs over Connect's REST API (one-shot)"),
    # demand forecasting: features and training are one-shots (`smartshelf ml features`, `ml train`); inference
    # rebuilds the features and forecasts daily at RUN_HOUR
    Service("shelf-daily-features", Profile.ML, "inference",
            "replays the lake into analytics.shelf_daily_features: a row per shelf per complete day (one-shot)"),
    Service("training-service", Profile.ML, "inference",
            "trains the XGBoost replenishment model on the lake's days and registers it (one-shot)"),
    Service("inference-service", Profile.ML, "inference",
            "daily at RUN_HOUR: the newest model's forecast → ml_predictions_log, pending plans → wh_supplier_plan"),
    Service("mlflow", Profile.ML, "mlflow", "MLflow tracking server and UI over the training runs (port 5001)"),
    Service("dashboard", Profile.DASHBOARD, "dashboard", "Streamlit dashboard: store map, states, plans, alerts (port 8501)"),
    Service("api", Profile.API, "api",
            "live API (port 8000): read-only REST over PostgreSQL, WebSocket feed of the topics from Kafka"),
)
