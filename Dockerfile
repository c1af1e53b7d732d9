# One image for every Python service of the compose path (init jobs, producers, apps, dashboard).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY smartshelf ./smartshelf
RUN pip install --no-cache-dir .
COPY . .
# bytecode in the pyspark.zip Spark puts first on its workers' path (scripts/compile_pyspark_zip.py)
RUN python scripts/compile_pyspark_zip.py
