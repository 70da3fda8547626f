"""Run a child process under a memory limit: a cgroup v1 memory group of its own (this box: cgroup v1, root).

    with MemoryLimit(700 * 2**20) as limit:
        result = limit.run(["trainpipe", "train", ...], env=env)
    result["peak_bytes"], result["oom_killed"], ...

The group is created under /sys/fs/cgroup/memory, its `memory.limit_in_bytes` (and
`memory.memsw.limit_in_bytes`, memory plus swap, when the kernel has it) set, the child added to
`cgroup.procs` before it executes anything (so all it and its children allocate counts), and the group
removed afterwards. Its peak is the kernel's `memory.max_usage_in_bytes` (page cache included: the kernel
reclaims cache before it kills anything, so a run near the limit shows a peak near the limit); the child's
own peak RSS comes from `wait4`. `systemd-run --user -p MemoryMax=` does not work here (no user manager).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def supported() -> bool:
    """Whether this process can make cgroup v1 memory groups (root on a v1 memory hierarchy)."""
    return os.geteuid() == 0 and (CGROUP_ROOT / "cgroup.procs").exists() and os.access(CGROUP_ROOT, os.W_OK)


class MemoryLimit:
    """A cgroup v1 memory group limited to `limit_bytes`, for child processes started through `run`."""

    def __init__(self, limit_bytes: int, name: Optional[str] = None):
        self.limit_bytes = int(limit_bytes)
        self.path = CGROUP_ROOT / f"trainpipe-{name or 'limit'}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> MemoryLimit:
        self.path.mkdir()
        try:
            self._write("memory.limit_in_bytes", self.limit_bytes)
            if (self.path / "memory.memsw.limit_in_bytes").exists():  # no escape into swap either
                self._write("memory.memsw.limit_in_bytes", self.limit_bytes)
        except BaseException:
            self.path.rmdir()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(50):  # whatever the child left behind (it was ours) ends with the group
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.path.rmdir()

    def _write(self, name: str, value: Any) -> None:
        (self.path / name).write_text(f"{value}\n")

    def _read(self, name: str) -> Optional[int]:
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        text = (self.path / "cgroup.procs").read_text()
        return [int(p) for p in text.split()]

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this group (memory.oom_control's oom_kill)."""
        try:
            for line in (self.path / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def run(self, cmd: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[str] = None,
            timeout: Optional[float] = None) -> dict[str, Any]:
        """Run `cmd` inside the group to its end: exit code, wall seconds, the group's peak bytes, the child's
        peak RSS, OOM kills, and its stdout and stderr (as text)."""
        procs = str(self.path / "cgroup.procs")

        def join_group() -> None:  # in the child, before exec: nothing it allocates escapes the limit
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        started = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, preexec_fn=join_group)
        deadline = None if timeout is None else started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                child.kill()
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {
            "rc": child.returncode,
            "killed_by_signal": -child.returncode if child.returncode < 0 else None,
            "wall_s": wall,
            "limit_bytes": self.limit_bytes,
            "peak_bytes": self._read("memory.max_usage_in_bytes"),
            "child_peak_rss_bytes": usage.ru_maxrss * 1024,
            "failcnt": self._read("memory.failcnt"),
            "oom_kills": self.oom_kills(),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }
