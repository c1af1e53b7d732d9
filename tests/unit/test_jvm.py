"""The JVM side is pinned once (conf/jvm/pom.xml) and agrees with everything that depends on it: the pyspark and
delta-spark wheels, the compose broker image, and the jars the bootstrap resolved (no class in two versions)."""

from __future__ import annotations

import importlib.metadata
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyspark
import yaml

from smartshelf.settings import Settings

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "conf" / "jvm" / "pom.xml"


def _pom_properties() -> dict[str, str]:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    properties = ET.parse(POM).getroot().find("m:properties", namespace)
    assert properties is not None
    return {child.tag.split("}")[1]: (child.text or "") for child in properties}


def _artifact(jar: Path) -> str:
    """A jar's artifact id: its name without the version."""
    return re.sub(r"-\d[\w.\-]*\.jar$", "", jar.name)


def test_the_python_wheels_match_the_jars() -> None:
    properties = _pom_properties()
    assert pyspark.__version__ == properties["spark.version"]
    assert importlib.metadata.version("delta-spark") == properties["delta.version"]


def test_the_compose_broker_is_the_embedded_broker_version() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{_pom_properties()['kafka.version']}"


def test_no_spark_jar_comes_twice() -> None:
    """What Maven adds for Spark must not repeat a jar of the pyspark wheel (two versions of one class)."""
    added = sorted((Settings(_env_file=None).jvm_dir / "spark").glob("*.jar"))  # type: ignore[call-arg]
    assert any("spark-sql-kafka" in jar.name for jar in added) and any("delta-spark" in jar.name for jar in added)
    shipped = {_artifact(jar) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    assert not {_artifact(jar) for jar in added} & shipped


def test_a_driver_sweeps_the_scratch_dirs_of_dead_drivers_only(tmp_path: Path) -> None:
    from smartshelf.adapters.spark import sweep_scratch

    for name in ("101", "202", "not-a-pid"):
        (tmp_path / name / "blockmgr-x").mkdir(parents=True)
    swept = sweep_scratch(tmp_path, alive=lambda pid: pid == 202)
    assert sorted(p.name for p in swept) == ["101", "not-a-pid"]
    assert [p.name for p in tmp_path.iterdir()] == ["202"]
    assert sweep_scratch(tmp_path / "none yet", alive=lambda pid: True) == []
