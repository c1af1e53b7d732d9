"""The apps' declarations: every topic an app reads has exactly one app that reports its invalid records."""

from __future__ import annotations

from smartshelf.registry import topic
from smartshelf.streaming.apps import all_apps


def test_each_topic_read_has_one_validating_app() -> None:
    apps = all_apps().values()
    read = {name for app in apps for name in app.topics}
    owners = {name: [app.name for app in apps if name in app.validates] for name in read}
    assert {name: len(names) for name, names in owners.items()} == dict.fromkeys(read, 1), owners
    for app in apps:
        assert set(app.validates) <= set(app.topics), app.name
        for name in app.topics:
            topic(name)  # a registry topic
