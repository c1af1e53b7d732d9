#!/usr/bin/env bash
# Installs everything Smart Shelf needs on a fresh Debian machine: Debian packages (PostgreSQL, Redis,
# Java 17 and Maven, docker-compose for config validation, Chromium for browser tests), the JVM jars pinned in
# conf/jvm/pom.xml (Kafka broker; Spark's Kafka connector and delta-spark) from Maven Central, and the Python
# venv. Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
STAMPS=.stamps
mkdir -p "$STAMPS"

need_debs=()
command -v redis-server >/dev/null || need_debs+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_debs+=(postgresql)
command -v java >/dev/null || need_debs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_debs+=(maven)
command -v docker-compose >/dev/null || need_debs+=(docker-compose)
command -v chromium >/dev/null || need_debs+=(chromium)
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
fi

# one classpath per profile of the pom, resolved again only when the pom changes
for profile in kafka spark connect; do
  dest=.tools/jvm/$profile
  if [ ! -f "$dest/.resolved" ] || [ conf/jvm/pom.xml -nt "$dest/.resolved" ]; then
    echo "bootstrap: resolving the JVM jars of profile '$profile' from Maven Central into $dest"
    rm -rf "$dest"
    mvn -q -B -Dstyle.color=never -f conf/jvm/pom.xml -P "$profile" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$PWD/$dest"
    touch "$dest/.resolved"
  fi
done

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$STAMPS/pip" ] || [ pyproject.toml -nt "$STAMPS/pip" ]; then
  echo "bootstrap: installing Python packages into .venv (first time: ~2 min)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -vE "^(WARNING|  )" || true
  .venv/bin/python -c "import smartshelf.cli, pyspark, delta, deltalake, confluent_kafka, redis, psycopg2" 
  touch "$STAMPS/pip"
fi
if [ ! -f "$STAMPS/pyspark-zip" ] || [ "$STAMPS/pip" -nt "$STAMPS/pyspark-zip" ]; then
  .venv/bin/python scripts/compile_pyspark_zip.py
  touch "$STAMPS/pyspark-zip"
fi
