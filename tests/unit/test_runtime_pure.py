"""Pure parts of the runtime, settings and policies: no server started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smartshelf.apps.lifecycle import STACKS_SIGNAL
from smartshelf.datagen import generate_store
from smartshelf.errors import SmartShelfError
from smartshelf.policies import derive_config, load_policy_config
from smartshelf.runtime import supervisor
from smartshelf.runtime.servers import SERVICE_CLASSES, WatchdogService, WatchdogStandbyService, port_is_free
from smartshelf.runtime.scratch import FAILED_LOGS, free_ports, keep_logs
from smartshelf.runtime.watchdog import RestartBudget
from smartshelf.settings import Settings


def test_select_adds_dependencies_in_start_order() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [s.name for s in supervisor.select(settings, ["kafka"])] == ["kafka"]
    assert [s.name for s in supervisor.select(settings, ["redis", "kafka"])] == ["kafka", "redis"]
    assert [s.name for s in supervisor.select(settings, None)] == ["kafka", "postgres", "redis"]
    with pytest.raises(SmartShelfError, match="unknown server 'zookeeper'"):
        supervisor.select(settings, ["zookeeper"])


def test_settings_read_the_reference_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    monkeypatch.setenv("USE_SIMULATED_TIME", "1")
    monkeypatch.setenv("TIME_MULTIPLIER", "60")
    monkeypatch.setenv("KAFKA_PORT", "19092")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.postgres_port == 6543
    assert settings.use_simulated_time is True
    assert settings.time_multiplier == 60
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.postgres_dsn_for("reader").startswith("postgresql://smartshelf_reader:")


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARTING_OFFSETS", "middle")
    with pytest.raises(ValueError, match="STARTING_OFFSETS"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(port_is_free(p) for p in ports)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(p < low for p in ports)  # no outgoing connection is handed one of them meanwhile


def test_policies_follow_category_overrides() -> None:
    store = generate_store(3)
    config = derive_config(store, load_policy_config())
    category = {row.shelf_id: row.item_category for row in store.store_inventory}
    by_shelf = {p.shelf_id: p for p in config.shelf_policies}
    bakery = next(s for s, c in category.items() if c == "BREAD AND BREADSTICKS")
    beverages = next(s for s, c in category.items() if c == "BEVERAGES")
    assert by_shelf[bakery].near_expiry_days == 1 and by_shelf[bakery].low_stock_threshold_pct == 0.3
    assert by_shelf[beverages].near_expiry_days == 14  # the default
    wh = {p.shelf_id: p for p in config.wh_policies}
    assert all(0 <= p.reorder_point < p.order_up_to for p in wh.values())
    assert len(config.shelf_profiles) == len(store.store_inventory)


def test_bad_policy_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "policies.yaml"
    bad.write_text("shelf: {low_stock_threshold_pct: 2}\nwarehouse: {}\n")
    with pytest.raises(SmartShelfError, match="policy file .* is invalid"):
        load_policy_config(bad)


def test_the_watchdog_restarts_a_process_at_most_its_limit_within_the_window() -> None:
    budget = RestartBudget(limit=2, window_s=60.0)
    for at in (0.0, 10.0):
        assert budget.allows("clock", at)
        budget.spend("clock", at)
    assert not budget.allows("clock", 59.0)
    assert budget.allows("spark", 59.0)  # each process has its own budget
    assert budget.allows("clock", 60.5)  # the first restart has left the window


def test_the_watchdogs_start_last_so_that_down_stops_them_first() -> None:
    assert SERVICE_CLASSES[-2:] == (WatchdogService, WatchdogStandbyService)


def test_a_log_past_its_size_is_copied_and_emptied_while_its_writer_goes_on(tmp_path: Path) -> None:
    log, small = tmp_path / "bridge.log", tmp_path / "clock.log"
    small.write_bytes(b"x" * 10)
    with open(log, "ab", buffering=0) as writer:  # as the supervisor opens a process's log
        writer.write(b"old line\n" * 200)
        assert supervisor.rotate_logs(tmp_path, max_bytes=1000) == ["bridge.log"]
        writer.write(b"new line\n")
    assert (tmp_path / "bridge.log.1").read_bytes() == b"old line\n" * 200
    assert log.read_bytes() == b"new line\n"  # appended at the start of the emptied file, no hole before it
    assert small.read_bytes() == b"x" * 10 and not (tmp_path / "clock.log.1").exists()
    assert supervisor.rotate_logs(tmp_path, max_bytes=1000) == []


def test_a_failed_query_restarts_after_a_pause_that_doubles_and_old_failures_leave_the_window() -> None:
    from smartshelf.streaming.runner import QUERY_FAILURES_WINDOW_S, RESTART_PAUSE_S, Failures

    failures = Failures()
    assert [failures.add(float(n)) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, RESTART_PAUSE_S[1],
                                                         RESTART_PAUSE_S[1]]
    assert failures.recent(6.0) == 7
    assert failures.recent(QUERY_FAILURES_WINDOW_S + 3.5) == 3  # those at 4, 5 and 6 s are still recent
    assert failures.add(QUERY_FAILURES_WINDOW_S + 4.0) == 8.0  # the fourth recent failure


def test_a_process_memory_counts_children_leading_sessions_but_not_the_other_servers() -> None:
    """PostgreSQL's backends lead sessions of their own and are part of it; a server the watchdog started again
    is its child too, and counts as itself."""
    def child() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)

    backend, other_server = child(), child()
    try:
        tree = supervisor._process_tree(os.getpid(), frozenset({other_server.pid}))
        assert backend.pid in tree and other_server.pid not in tree and os.getpid() in tree
    finally:
        for process in (backend, other_server):
            process.kill()
            process.wait()


def test_a_failed_scratch_stacks_logs_are_kept_and_only_the_last_failures(tmp_path: Path) -> None:
    kept_under = tmp_path / "run" / FAILED_LOGS
    for name in ("smartshelf-sim-first", "smartshelf-sim-second"):
        (tmp_path / name / "logs").mkdir(parents=True)
        (tmp_path / name / "logs" / "spark.log").write_text(f"{name} went wrong\n")
        kept = keep_logs(tmp_path / name, kept_under)
        assert kept == kept_under / name
    assert [p.name for p in kept_under.iterdir()] == ["smartshelf-sim-second"]
    assert (kept_under / "smartshelf-sim-second" / "spark.log").read_text() == "smartshelf-sim-second went wrong\n"


def test_a_stopped_servers_process_group_goes_with_it() -> None:
    """A leader killed -9 leaves its children orphaned in its group (a forecast's worker, say); kill_group ends them."""
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.kill()
    leader.wait()
    assert Path(f"/proc/{child}").exists()
    supervisor.kill_group(leader.pid)
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the leader's child {child} outlived kill_group")


def test_a_service_writes_every_threads_stack_to_its_log_when_asked() -> None:
    script = ("import threading, time, redis\n"
              "from smartshelf.apps.lifecycle import Lifecycle\n"
              "Lifecycle('probe', redis.Redis(port=1))\n"
              "threading.Thread(target=time.sleep, args=(60,), name='worker', daemon=True).start()\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert service.stdout is not None and service.stdout.readline().strip() == "ready"
        service.send_signal(STACKS_SIGNAL)
        time.sleep(1)
        assert service.poll() is None  # it goes on
    finally:
        service.kill()
    _, stacks = service.communicate()
    assert stacks.count("(most recent call first)") == 2 and "Current thread" in stacks, stacks


def test_the_mirror_check_expects_history_beyond_a_trimmed_topic() -> None:
    from smartshelf.runtime.mirror import _compare

    row = {("1",): ("a",), ("2",): ("b",)}
    wanted = {("2",): ("b",), ("3",): ("c",)}  # the topic lost key 1 to retention; 3 has not reached PostgreSQL
    assert _compare("t", wanted, row, 5) == ["t 1: not in its topic", "t 3: missing"]  # type: ignore[arg-type]
    assert _compare("t", wanted, row, 5, history_kept=True) == ["t 3: missing"]  # type: ignore[arg-type]
