"""Demand forecasting for replenishment: daily features from a run's records (features), honest training against
two baselines (train), model artifacts (artifacts) and forecasts turned into supplier plans (predict). Pure: no
Kafka, Spark, PostgreSQL or Redis; the only I/O is reading and writing model artifacts."""

import os

# XGBoost's OpenMP threads spin while they wait for each other. On two cores shared with other work (the stack's
# Kafka and Spark, a test run) a training with nthread=2 then took 13-43 s instead of 1-2 s (measured on the
# synthetic weekly series of tests/unit/test_ml.py and on 14,000 rows), with the same model. Waiting passively
# keeps it at 1-2 s. libgomp reads this when xgboost is first imported, which is after this package's import;
# a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
