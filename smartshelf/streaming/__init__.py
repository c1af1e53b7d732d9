"""Spark Structured Streaming apps: each app one streaming query over one topic, its batches handled by
pure rules (smartshelf.rules) in foreachBatch; the runner starts any subset of them in one SparkSession."""
