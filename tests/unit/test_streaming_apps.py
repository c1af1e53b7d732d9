"""The apps' declarations: every topic an app reads has exactly one app that reports its invalid records."""

from __future__ import annotations

from datetime import datetime

from smartshelf.datagen import generate_store
from smartshelf.registry import table, topic
from smartshelf.rules import InitialStates
from smartshelf.streaming.apps import all_apps
from smartshelf.streaming.keyed import KeyedApp
from smartshelf.streaming.keyed_loop import KEYED_LOOP_APP_CLASSES, KeyedLoopApp


def test_each_topic_read_has_one_validating_app() -> None:
    apps = all_apps().values()
    read = {name for app in apps for name in app.topics}
    owners = {name: [app.name for app in apps if name in app.validates] for name in read}
    assert {name: len(names) for name, names in owners.items()} == dict.fromkeys(read, 1), owners
    for app in apps:
        assert set(app.validates) <= set(app.topics), app.name
        for name in app.topics:
            topic(name)  # a registry topic


def test_each_state_app_starts_from_rows_of_its_own_table() -> None:
    store = generate_store(42)
    for app in all_apps().values():
        if not isinstance(app, KeyedApp):
            continue
        assert app.initial_field in InitialStates._fields, app.name
        rows = app.initial(store, datetime(2025, 1, 1))
        assert rows and {type(row) for row in rows} == {table(app.state_table).schema}, app.name


def test_the_runner_shares_one_query_unless_asked_for_one_per_app() -> None:
    from smartshelf.settings import Settings
    from smartshelf.streaming.runner import KEYED_QUERY, LAKE_SINK, query_groups

    apps = list(all_apps().values())
    names = [app.name for app in apps]
    keyed = [app.name for app in apps if isinstance(app, (KeyedApp, KeyedLoopApp))]
    assert keyed == ["shelf-aggregator", "batch-state-updater", "wh-aggregator", "wh-batch-state-updater",
                     "shelf-alert-engine", "wh-alert-engine", "shelf-restock-manager", "shelf-refill-bridge",
                     "wh-supplier-manager", "daily-discount-manager", "removal-scheduler"]
    assert names == [*keyed, LAKE_SINK]  # every app of the twin keeps its state in Spark's state store
    assert query_groups(Settings(), apps) == {KEYED_QUERY: keyed, LAKE_SINK: [LAKE_SINK]}
    assert query_groups(Settings(SPARK_QUERY_PER_APP=True), apps) == {name: [name] for name in names}
    assert query_groups(Settings(), apps[:1]) == {names[0]: [names[0]]}  # an app alone keeps its own name


def test_loop_apps_publish_only_to_topics_with_ids_or_compacted_ones() -> None:
    """A replayed batch publishes again only what it can drop by id or what a compacted topic takes again."""
    from smartshelf.streaming.pulse import PulseApp

    for app in [PulseApp({}), *(cls() for cls in KEYED_LOOP_APP_CLASSES)]:
        for name in app.outputs:
            assert topic(name).compacted or topic(name).id_field is not None, (app.name, name)
