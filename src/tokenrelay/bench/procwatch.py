"""What the server and the load generator cost while the load runs, read from /proc (Linux).

The server is named by pid (`--server-pid`, or `auto`: runner.py); its children, e.g. uvicorn
or nginx workers, are counted with it. Open connections are the ESTABLISHED TCP sockets on the
target's port, from /proc/net/tcp and tcp6, so they are counted whatever process holds them.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
_ESTABLISHED = "01"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the watch began
    cpu_seconds: float  # the server's, cumulative
    rss_bytes: int
    connections: int


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (children are listed by /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces; None if there is no such process here."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None


def cpu_seconds(pids: list[int]) -> float:
    user, system = user_system_seconds(pids)
    return user + system


def user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds in user space and in the kernel (system calls, the loopback's TCP work)."""
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        user += int(fields[11]) / TICKS  # utime
        system += int(fields[12]) / TICKS  # stime
    return user, system


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


def established_connections(port: int) -> int:
    """ESTABLISHED sockets whose local port is `port` (the server's side of each connection)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _ESTABLISHED and int(fields[1].rpartition(":")[2], 16) == port:
                count += 1
    return count


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Watch:
    """Samples every `interval` seconds in the background while the load runs."""

    def __init__(self, server_pid: int | None, port: int, interval: float = 0.5) -> None:
        self.server_pid = server_pid
        self.port = port
        self.interval = interval
        self.samples: list[Sample] = []
        self._began = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Sample:
        pids = process_tree(self.server_pid) if self.server_pid else []
        sample = Sample(
            time.perf_counter() - self._began,
            cpu_seconds(pids),
            rss_bytes(pids),
            established_connections(self.port),
        )
        self.samples.append(sample)
        return sample

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            # /proc reads are quick and local; off the loop they would cost a thread hop.
            self.sample()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()
