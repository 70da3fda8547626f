"""The CLI's embedded Prefect server (no API configured): the run is recorded on it, its log lines reach it before it
stops, no server process outlives the command, and a server that cannot start is one clear error."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def embedded_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Prefect API: the CLI has to start its own server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    # INFO: the run's own log lines go to the server (the test session logs only warnings)
    return {**env, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "INFO", **extra}


def servers_of(home: Path) -> list[int]:
    """Pids of Prefect API server processes started with this PREFECT_HOME."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if b"prefect.server.api.server:create_app" in cmdline and f"PREFECT_HOME={home}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def test_a_cli_run_without_an_api_runs_on_its_embedded_server_and_leaves_nothing_running(tmp_path: Path,
                                                                                          penguins_csv: Path):
    home = tmp_path / "prefect-home"
    done = subprocess.run([sys.executable, "-m", "trainpipe", "train", "--data", str(penguins_csv), "--target",
                           "species", "--artifacts", str(tmp_path / "art"), "--json"],
                          cwd=ROOT, env=embedded_env(home), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == 1
    assert "Error logging to API" not in done.stderr and "connection attempts failed" not in done.stderr.lower()
    assert servers_of(home) == []  # stopped with the command

    # the run, its states and its log lines are in the embedded server's database
    with sqlite3.connect(home / "prefect.db") as db:
        runs = db.execute("SELECT id, state_type FROM flow_run").fetchall()
        assert [state for _, state in runs] == ["COMPLETED"]
        tasks = {name.rsplit("-", 1)[0] for (name,) in db.execute("SELECT name FROM task_run")}
        assert {"ingest", "validate", "train", "store"} <= tasks
        logged = db.execute("SELECT count(*) FROM log WHERE flow_run_id = ?", (runs[0][0],)).fetchone()[0]
        assert logged > 0
        assert db.execute("SELECT count(*) FROM log WHERE message LIKE ?", ("%model penguins version 1%",)).fetchone()[0]


def test_an_embedded_server_that_cannot_start_is_one_clear_error(tmp_path: Path, penguins_csv: Path):
    home = tmp_path / "prefect-home"
    # a database the server cannot open: its application fails to start, on any port
    env = embedded_env(home, PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://nobody@127.0.0.1:9/none",
                       PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="60")
    done = subprocess.run([sys.executable, "-m", "trainpipe", "train", "--data", str(penguins_csv), "--target",
                           "species", "--artifacts", str(tmp_path / "art")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 9, done.stderr[-3000:]
    assert "the embedded Prefect server exited with code 3" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "art" / "models").exists()
    assert servers_of(home) == []


def test_the_embedded_server_ends_when_the_cli_is_killed(tmp_path: Path, penguins_csv: Path):
    """SIGKILL (or the OOM killer) runs no exit handler: the server still goes with the CLI, not left behind."""
    import signal
    import time

    home = tmp_path / "prefect-home"
    proc = subprocess.Popen([sys.executable, "-m", "trainpipe", "train", "--data", str(penguins_csv), "--target",
                             "species", "--artifacts", str(tmp_path / "art")],
                            cwd=ROOT, env=embedded_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not servers_of(home):
        assert proc.poll() is None and time.monotonic() < deadline, "no embedded server was started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the CLI alone, not its process group
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while servers_of(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers_of(home) == []
