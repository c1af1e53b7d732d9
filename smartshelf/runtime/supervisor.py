"""Start, stop and inspect the embedded stack: each server a detached process with a pid file and a log.

State lives only on disk (run_dir/pids/*.json), so `smartshelf up`, `status` and `down` can be separate
invocations, and a server killed with -9 is seen as down and simply started again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from smartshelf.apps.lifecycle import STACKS_SIGNAL
from smartshelf.errors import SmartShelfError
from smartshelf.runtime.servers import Server, all_processes, all_servers, port_is_free
from smartshelf.settings import Settings

STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 15

# Children started by this process, kept so that they are reaped (no zombie counted as running).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServerStatus:
    name: str
    port: int | None
    pid: int | None
    running: bool
    healthy: bool
    rss_mb: float | None
    pss_mb: float | None
    problem: str | None = None


def select(settings: Settings, names: Iterable[str] | None = None) -> list[Server]:
    """The processes named (all infrastructure servers if None) plus what they depend on, in start order."""
    if names is None:
        return all_servers(settings)
    servers = all_processes(settings)
    by_name = {s.name: s for s in servers}
    wanted: set[str] = set()

    def want(name: str) -> None:
        if name not in by_name:
            raise SmartShelfError(f"unknown server '{name}' (known: {', '.join(by_name)})")
        wanted.add(name)
        for dependency in by_name[name].depends_on:
            want(dependency)

    for name in names:
        want(name)
    return [s for s in servers if s.name in wanted]


def _pid_file(server: Server) -> Path:
    return server.settings.run_dir / "pids" / f"{server.name}.json"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None if no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, start_ticks: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    fields = _proc_stat(pid)
    # the start time tells our process from an unrelated one that reused the pid
    return fields is not None and fields[0] != "Z" and int(fields[19]) == start_ticks


def _recorded_pid(server: Server) -> int | None:
    path = _pid_file(server)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record["pid"] if _alive(record["pid"], record["start_ticks"]) else None


def uptime_s(settings: Settings, name: str) -> float | None:
    """Seconds since the running process started (None if it does not run)."""
    (server,) = [s for s in all_processes(settings) if s.name == name]
    pid = _recorded_pid(server)
    ticks = _start_ticks(pid) if pid is not None else None
    if ticks is None:
        return None
    return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int, apart: frozenset[int]) -> list[int]:
    """The process and its descendants but those in `apart` and theirs: a server the watchdog started again is its
    child, and counts as itself, not as part of the watchdog. (Not every session leader is apart: PostgreSQL's
    backends lead sessions of their own.)"""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and int(entry.name) not in apart:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        tree.append(current)
        frontier.extend(children.get(current, []))
    return tree


def cpu_s(pid: int, apart: frozenset[int] = frozenset()) -> float:
    """CPU seconds (user and system) a process and its descendants but those in `apart` have used so far, with the
    children they have reaped (a Spark app's Python workers that came and went)."""
    ticks = 0
    for member in _process_tree(pid, apart):
        fields = _proc_stat(member)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, apart: frozenset[int] = frozenset()) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a process and its descendants but those in `apart` (see `_process_tree`); PSS shares
    pages fairly between them."""
    rss_kb = pss_kb = 0
    for member in _process_tree(pid, apart):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss_kb += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss_kb += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss_kb / 1024, pss_kb / 1024


def _probe(server: Server) -> str | None:
    try:
        server.probe()
    except Exception as exc:  # any failure to answer means unhealthy; the reason is reported
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def log_tail(server: Server, lines: int = LOG_TAIL_LINES) -> str:
    log = server.paths().log
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _spawn(server: Server) -> int:
    paths = server.paths()
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    argv = server.argv()
    with open(paths.log, "ab") as log:
        log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=paths.data,
            env={**os.environ, **server.env()}, start_new_session=True, user=server.run_as(),
        )
    _children[process.pid] = process
    start_ticks = _start_ticks(process.pid)
    _pid_file(server).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(server).write_text(json.dumps({"pid": process.pid, "start_ticks": start_ticks, "port": server.port}))
    return process.pid


def _wait_healthy(server: Server, pid: int) -> None:
    start_ticks = json.loads(_pid_file(server).read_text())["start_ticks"]
    deadline = time.monotonic() + server.start_timeout_s
    problem = None
    while time.monotonic() < deadline:
        if not _alive(pid, start_ticks):
            raise SmartShelfError(f"{server.name} exited during start-up; last lines of {server.paths().log}:\n"
                                  f"{log_tail(server)}")
        problem = _probe(server)
        if problem is None:
            return
        time.sleep(0.2)
    raise SmartShelfError(f"{server.name} did not become healthy in {server.start_timeout_s:.0f}s ({problem}); "
                          f"last lines of {server.paths().log}:\n{log_tail(server)}")


def _port_frees_up(port: int, within_s: float = 5.0) -> bool:
    """A server just killed may hold its port a moment longer while its threads exit."""
    deadline = time.monotonic() + within_s
    while not port_is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def start(settings: Settings, names: Iterable[str] | None = None) -> dict[str, float]:
    """Start what is not running; returns seconds each started server took to become healthy."""
    timings: dict[str, float] = {}
    for server in select(settings, names):
        if _recorded_pid(server) is not None:
            continue
        if server.port is not None and not _port_frees_up(server.port):
            raise SmartShelfError(f"{server.name}: port {server.port} on 127.0.0.1 is already in use "
                                  f"(stop what holds it or choose another port in the settings)")
        began = time.monotonic()
        server.prepare()
        pid = _spawn(server)
        _wait_healthy(server, pid)
        server.after_start()
        timings[server.name] = time.monotonic() - began
    return timings


def stop(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Stop the named processes (all if None) in reverse start order; returns those that were running."""
    stopped = []
    servers = all_processes(settings)
    if names is not None:
        servers = [s for s in servers if s.name in set(names)]
    for server in reversed(servers):
        pid = _recorded_pid(server)
        if pid is not None:
            _terminate(server, pid)
            stopped.append(server.name)
        _pid_file(server).unlink(missing_ok=True)
    return stopped


def _terminate(server: Server, pid: int) -> None:
    start_ticks = json.loads(_pid_file(server).read_text())["start_ticks"]
    os.kill(pid, server.stop_signal)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid, start_ticks) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, start_ticks):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid, start_ticks):
            time.sleep(0.05)
    kill_group(pid)


def kill_group(pid: int) -> None:
    """SIGKILL what a stopped server left in its process group (it led the group): a child it did not stop, such
    as the inference service's forecasting process when the service had to be killed mid-run, would otherwise
    live on, orphaned."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def pid_of(settings: Settings, name: str) -> int:
    """The pid of a running server (it leads its process group)."""
    (server,) = [s for s in all_processes(settings) if s.name == name]
    pid = _recorded_pid(server)
    if pid is None:
        raise SmartShelfError(f"{name} is not running")
    return pid


def kill_hard(settings: Settings, name: str) -> int:
    """SIGKILL one server with its whole process group (its children: Spark's JVM and Python workers), for
    failure tests and drills; returns the pid killed."""
    (server,) = [s for s in all_processes(settings) if s.name == name]
    pid = pid_of(settings, name)
    start_ticks = json.loads(_pid_file(server).read_text())["start_ticks"]
    os.killpg(pid, signal.SIGKILL)  # each server leads its own session (_spawn)
    while _alive(pid, start_ticks):
        time.sleep(0.05)
    return pid


def dump_stacks(settings: Settings, name: str, wait_s: float = 1.0) -> None:
    """Ask a running service that beats a heartbeat to write every thread's stack to its log
    (smartshelf.apps.lifecycle), and give it `wait_s` to do so; a process already gone is left alone."""
    try:
        os.kill(pid_of(settings, name), STACKS_SIGNAL)
    except (SmartShelfError, ProcessLookupError):
        return
    time.sleep(wait_s)


def heal(settings: Settings) -> dict[str, list[str]]:
    """What each running process repaired of itself (Server.heal), by name; a process that does not answer is
    left to the crash and hang checks."""
    repaired = {}
    for server in all_processes(settings):
        if _recorded_pid(server) is None:
            continue
        try:
            if done := server.heal():
                repaired[server.name] = done
        except SmartShelfError:
            continue
    return repaired


def crashed(settings: Settings) -> list[str]:
    """The processes that were started and not stopped (their pid file is there) but are gone, in start order."""
    return [server.name for server in all_processes(settings)
            if _pid_file(server).exists() and _recorded_pid(server) is None]


def rotate_logs(log_dir: Path, max_bytes: int) -> list[str]:
    """Each log in `log_dir` past `max_bytes` is copied to `<name>.1` (the previous copy goes) and emptied in place;
    returns the names rotated. In place, because the process writing it keeps its file open in append mode: its
    next write lands at the start of the emptied file. Lines written between the copy and the truncation are lost,
    the price of not restarting the writer."""
    rotated = []
    for log in sorted(log_dir.glob("*.log")):
        if log.stat().st_size <= max_bytes:
            continue
        shutil.copyfile(log, log.with_name(log.name + ".1"))
        os.truncate(log, 0)
        rotated.append(log.name)
    return rotated


def beating(settings: Settings) -> list[str]:
    """The running processes that beat a heartbeat (smartshelf.apps.lifecycle), in start order."""
    return [server.name for server in all_processes(settings) if server.beats and _recorded_pid(server) is not None]


def status(settings: Settings) -> list[ServerStatus]:
    """Every infrastructure server, and every service that was started (and not stopped since)."""
    result = []
    infra = {s.name for s in all_servers(settings)}
    listed = [s for s in all_processes(settings) if s.name in infra or _pid_file(s).exists()]
    pids = {server.name: _recorded_pid(server) for server in listed}
    servers = frozenset(pid for pid in pids.values() if pid is not None)
    for server in listed:
        pid = pids[server.name]
        problem = _probe(server) if pid is not None else "not running"
        rss, pss = memory_mb(pid, servers - {pid}) if pid is not None else (None, None)
        result.append(ServerStatus(
            name=server.name, port=server.port, pid=pid, running=pid is not None,
            healthy=pid is not None and problem is None, rss_mb=rss, pss_mb=pss, problem=problem,
        ))
    return result
