# One image for every Python service of the compose path (init jobs, producers, apps, dashboard).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# the Spark apps' jars (Kafka connector, delta-spark) and Kafka Connect with its JDBC sink, resolved from Maven
# Central as scripts/bootstrap.sh does
COPY conf/jvm/pom.xml conf/jvm/pom.xml
RUN for profile in spark connect; do \
      mvn -q -B -f conf/jvm/pom.xml -P $profile dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory=/app/.tools/jvm/$profile || exit 1; \
    done && rm -rf /root/.m2
COPY pyproject.toml ./
COPY smartshelf ./smartshelf
RUN pip install --no-cache-dir .
COPY . .
# bytecode in the pyspark.zip Spark puts first on its workers' path (scripts/compile_pyspark_zip.py)
RUN python scripts/compile_pyspark_zip.py
