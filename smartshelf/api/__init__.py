"""The live API: REST over the PostgreSQL mirror and a WebSocket event feed from Kafka."""
