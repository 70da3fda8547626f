"""Killed processes: real SIGKILLs at the worst moments, and a Prefect server restarted mid-run.

Every run that dies is an OS process of its own (the driver `killed_worker.py` or the `trainpipe` CLI),
killed with SIGKILL, never a raised exception standing in for one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.train import train_flow
from trainpipe import audit, registry
from trainpipe.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def server_env(api_url: str | None = None) -> dict[str, str]:
    """The environment of a child process: this session's Prefect server (or `api_url`), no ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = api_url or PREFECT_API_URL.value()
    env["PYTHONPATH"] = str(ROOT)
    return env


def audit_verify(artifacts: str, name: str, env: dict[str, str]) -> int:
    """`trainpipe audit verify NAME`'s exit code (its output is shown when it fails)."""
    done = subprocess.run([sys.executable, "-m", "trainpipe", "audit", "verify", name, "--artifacts", artifacts],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    print(done.stdout, done.stderr)
    return done.returncode


def test_a_run_sigkilled_between_commit_and_audit_record_is_repaired_by_the_next_run(tmp_path: Path,
                                                                                      penguins_csv: Path):
    artifacts = str(tmp_path / "art")
    killed = subprocess.run([sys.executable, str(HERE / "killed_worker.py"), "after-commit", artifacts,
                             str(penguins_csv), "penguins", "species"],
                            cwd=ROOT, env=server_env(), check=False, capture_output=True, text=True, timeout=300)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert registry.list_versions(artifacts, "penguins") == [1]  # committed ...
    assert audit.read_log(artifacts, "penguins") == []  # ... but never logged
    assert registry.verify_registry(artifacts, "penguins") == [
        "version 1 is committed but the audit log has no record of its publication"]

    spec = parse_spec({"name": "penguins", "data": {"uris": [str(penguins_csv)]}, "target": "species",
                       "artifacts": artifacts})
    repaired = train_flow(spec)

    assert repaired["version"] == 1 and not repaired["reused"] and repaired["promoted"]
    assert all(repaired["stages"][s]["cached"] for s in ("ingest", "validate", "split", "features", "train"))
    events = [(r["event"], r.get("version")) for r in audit.read_log(artifacts, "penguins")]
    assert events == [("version_published", 1), ("gate_verdict", 1), ("alias_moved", 1)]
    assert registry.champion(artifacts, "penguins") == 1
    assert audit_verify(artifacts, "penguins", server_env()) == 0

    # no number was skipped or claimed twice: the next, different model is version 2
    changed = train_flow(spec.model_copy(update={"seed": 7}))
    assert changed["version"] == 2
    assert registry.claimed_versions(artifacts, "penguins") == [1, 2]
    assert registry.verify_registry(artifacts, "penguins") == []


# --- SIGKILL during tuning and during training, then the same command again ----------------------------

KILL_SPEC = """\
name: killed
data: {{uris: ["{data}"]}}
target: y
task: binary
seed: 5
xgboost: {{num_boost_round: 150, early_stopping_rounds: 20, learning_rate: 0.03, max_depth: 6, nthread: 2}}
tuning: {{trials: 4, parallelism: 2, pruner: none, storage: journal,
          search_space: {{learning_rate: 0.03, max_depth: {{low: 4, high: 6}}}}}}
artifacts: "{artifacts}"
"""

DATA_STAGES = ("ingest", "validate", "split", "features")


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory) -> Path:
    """A noisy binary task large enough that a trial and the final fit take seconds, not milliseconds."""
    rng = np.random.default_rng(11)
    n = 20_000
    x = rng.normal(size=(n, 8))
    logit = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * x[:, 4] + rng.normal(0, 1.0, n)
    path = tmp_path_factory.mktemp("killdata") / "noisy.csv"
    frame = pl.DataFrame({f"x{i}": x[:, i] for i in range(8)}).with_columns(y=pl.Series(logit > 0))
    frame.write_csv(path)
    return path


def write_spec(folder: Path, data: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.yaml"
    spec.write_text(KILL_SPEC.format(data=data, artifacts=folder / "art"))
    return spec


def train_cli(spec: Path, log: Path) -> subprocess.Popen:
    """`trainpipe train SPEC --json` in its own process group, against this session's Prefect server."""
    return spawn([sys.executable, "-m", "trainpipe", "train", str(spec), "--json"], log, server_env())


def spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A child in its own process group, stdout and stderr to LOG.out and LOG.err."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> dict:
    assert proc.wait(timeout=300) == 0, log.with_suffix(".err").read_text()[-3000:]
    return json.loads(log.with_suffix(".out").read_text())


def wait_then_kill(proc: subprocess.Popen, log: Path, ready, what: str) -> None:
    """Poll until `ready()` holds, then SIGKILL the whole process group (a deadline only guards a hung run)."""
    deadline = time.monotonic() + 240
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: "
                        f"{log.with_suffix('.err').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never saw {what}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def journal_trials(artifacts: Path) -> list:
    """The trials of the one study in the store's journal, as the killed process left them."""
    import optuna

    journals = list((artifacts / "tuning").glob("*.journal"))
    if not journals:
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journals[0])))
    studies = storage.get_all_studies()
    return storage.get_all_trials(studies[0]._study_id, deepcopy=True) if studies else []


def states(trials: list) -> list[str]:
    return [t.state.name for t in trials]


def finished_and_next_batch_running(trials: list) -> bool:
    """A trial finished and one of the second batch (trials 2 and 3 at parallelism 2) running: a state that lasts a
    whole trial. A trial of the first batch running beside a finished one can finish between this check and the
    kill, and the kill then lands between batches with no trial running (seen on a loaded box)."""
    return "COMPLETE" in states(trials) and any(t.state.name == "RUNNING" and t.number >= 2 for t in trials)


def model_sha(result: dict) -> str:
    return hashlib.sha256((Path(result["uri"]) / "model.ubj").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, kill_data: Path) -> dict:
    """The same spec run once, start to end, in a fresh store: what a killed and resumed run must match."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    log = folder / "run"
    result = finish(train_cli(write_spec(folder, kill_data), log), log)
    return {"result": result, "sha": model_sha(result), "trials": journal_trials(folder / "art")}


def test_a_run_sigkilled_during_tuning_resumes_its_study_and_ends_with_the_same_model(
        tmp_path: Path, kill_data: Path, uninterrupted: dict):
    spec, artifacts = write_spec(tmp_path, kill_data), tmp_path / "art"

    def one_trial_finished_and_the_next_running() -> bool:
        try:
            return finished_and_next_batch_running(journal_trials(artifacts))
        except (ValueError, KeyError, IndexError):  # a journal line half-written as we read it
            return False

    proc = train_cli(spec, tmp_path / "killed")
    wait_then_kill(proc, tmp_path / "killed", one_trial_finished_and_the_next_running, "a finished trial")
    before = journal_trials(artifacts)
    finished_before = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    running_at_kill = [t.number for t in before if t.state.name == "RUNNING"]
    assert finished_before and running_at_kill
    assert not list(artifacts.glob("cache/tune/*/_SUCCESS")) and not list(artifacts.glob("models/*/versions/*"))

    resumed = finish(train_cli(spec, tmp_path / "resumed"), tmp_path / "resumed")

    assert all(resumed["stages"][s]["cached"] for s in DATA_STAGES), resumed["stages"]
    assert not resumed["stages"]["tune"]["cached"] and not resumed["stages"]["train"]["cached"]
    after = journal_trials(artifacts)
    # the trials finished before the kill are kept, not run again; the killed ones are failed as abandoned
    assert {t.number: t.value for t in after if t.number in finished_before} == finished_before
    assert set(resumed["tuning"]["trials_this_run"]).isdisjoint(finished_before)
    assert all(after[n].state.name == "FAIL" and after[n].user_attrs["abandoned"] for n in running_at_kill)
    assert resumed["tuning"]["counts"]["complete"] == 4
    # and the study went on as if uninterrupted: the same parameters and values, the same model bytes
    complete = [(t.params, t.value) for t in after if t.state.name == "COMPLETE"]
    assert complete == [(t.params, t.value) for t in uninterrupted["trials"] if t.state.name == "COMPLETE"]
    assert resumed["tuning"]["best_params"] == uninterrupted["result"]["tuning"]["best_params"]
    assert model_sha(resumed) == uninterrupted["sha"]
    assert resumed["version"] == 1 and registry.verify_registry(str(artifacts), "killed") == []


POSTGRES = os.environ.get("TRAINPIPE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_study():
    """A study name of its own in the PostgreSQL server on this machine (a default name would meet the study of
    an earlier test session), deleted afterwards."""
    import optuna

    name = f"killed-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=POSTGRES)
    except KeyError:
        pass


def database_trials(study_name: str) -> list:
    """The study's trials as the database holds them now ([] before the run has created it)."""
    import optuna

    storage = optuna.storages.RDBStorage(POSTGRES)
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=True)
    except KeyError:
        return []
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_a_run_sigkilled_during_tuning_resumes_its_postgresql_study_and_ends_with_the_same_model(
        tmp_path: Path, kill_data: Path, uninterrupted: dict, postgres_study: str):
    """The kill-and-resume test above with the study in PostgreSQL: the killed process's RUNNING trials are
    failed as abandoned at once (their owner is a dead process of this host; the heartbeat would take its
    60 s grace), the finished ones are kept, and the model is the uninterrupted run's byte for byte (the
    storage is not part of what decides the trials)."""
    spec = tmp_path / "spec.yaml"
    text = KILL_SPEC.format(data=kill_data, artifacts=tmp_path / "art")
    spec.write_text(text.replace("storage: journal,", f"storage: \"{POSTGRES}\", study_name: {postgres_study},"))
    artifacts = tmp_path / "art"

    def one_trial_finished_and_the_next_running() -> bool:
        return finished_and_next_batch_running(database_trials(postgres_study))

    proc = train_cli(spec, tmp_path / "killed")
    wait_then_kill(proc, tmp_path / "killed", one_trial_finished_and_the_next_running, "a finished trial")
    before = database_trials(postgres_study)
    finished_before = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    running_at_kill = [t.number for t in before if t.state.name == "RUNNING"]
    assert finished_before and running_at_kill
    assert not list(artifacts.glob("models/*/versions/*"))

    started = time.monotonic()
    resumed = finish(train_cli(spec, tmp_path / "resumed"), tmp_path / "resumed")
    resume_s = time.monotonic() - started

    assert all(resumed["stages"][s]["cached"] for s in DATA_STAGES), resumed["stages"]
    assert not resumed["stages"]["tune"]["cached"]
    after = sorted(database_trials(postgres_study), key=lambda t: t.number)
    assert {t.number: t.value for t in after if t.number in finished_before} == finished_before
    assert set(resumed["tuning"]["trials_this_run"]).isdisjoint(finished_before)
    assert all(after[n].state.name == "FAIL" and after[n].user_attrs["abandoned"] for n in running_at_kill)
    assert resumed["tuning"]["counts"]["complete"] == 4 and resumed["tuning"]["study_name"] == postgres_study
    assert resumed["tuning"]["storage"] == POSTGRES
    complete = [(t.params, t.value) for t in after if t.state.name == "COMPLETE"]
    assert complete == [(t.params, t.value) for t in uninterrupted["trials"] if t.state.name == "COMPLETE"]
    assert resumed["tuning"]["best_params"] == uninterrupted["result"]["tuning"]["best_params"]
    assert model_sha(resumed) == uninterrupted["sha"]
    assert resumed["version"] == 1 and registry.verify_registry(str(artifacts), "killed") == []
    print(f"killed with trials {running_at_kill} running, {sorted(finished_before)} finished; resumed in "
          f"{resume_s:.1f} s")


def test_a_run_sigkilled_during_training_resumes_from_its_cached_stages_and_ends_with_the_same_model(
        tmp_path: Path, kill_data: Path, uninterrupted: dict):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, TaskRunFilter

    spec, artifacts = write_spec(tmp_path, kill_data), tmp_path / "art"

    def training() -> bool:
        if not list(artifacts.glob("cache/tune/*/_SUCCESS")):
            return False
        with get_client(sync_client=True) as client:  # the train task is RUNNING on the server
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                name={"like_": "train-"}, state={"type": {"any_": ["RUNNING"]}}))  # task runs are "train-<id>"
            return any(r.name.startswith("train-") and client.read_flow_run(r.flow_run_id).parameters["spec"][
                "artifacts"].startswith(str(artifacts)) for r in runs if r.flow_run_id)

    proc = train_cli(spec, tmp_path / "killed")
    wait_then_kill(proc, tmp_path / "killed", training, "the train stage running")
    assert not list(artifacts.glob("cache/train/*/_SUCCESS")), "training had finished before the kill"
    assert not list(artifacts.glob("models/*/versions/*"))

    resumed = finish(train_cli(spec, tmp_path / "resumed"), tmp_path / "resumed")

    assert all(resumed["stages"][s]["cached"] for s in (*DATA_STAGES, "tune")), resumed["stages"]
    assert not resumed["stages"]["train"]["cached"]
    assert resumed["tuning"]["trials_this_run"] == uninterrupted["result"]["tuning"]["trials_this_run"]
    assert len(journal_trials(artifacts)) == 4  # no trial ran again
    with get_client(sync_client=True) as client:  # nothing reported the killed run's end: still Running
        runs = [r for r in client.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["trainpipe-train"]}))
                if r.parameters["spec"]["artifacts"].startswith(str(artifacts))]
    assert sorted(r.state_type.value for r in runs) == ["COMPLETED", "RUNNING"]
    assert model_sha(resumed) == uninterrupted["sha"]
    assert resumed["version"] == 1 and registry.verify_registry(str(artifacts), "killed") == []


# --- the Prefect server restarted during a run ------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    """`prefect server start` as a process of its own, on a fixed port and SQLite database, to stop and start."""

    def __init__(self, folder: Path):
        self.port, self.folder = free_port(), folder
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update(PREFECT_HOME=str(folder / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
                        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'prefect.db'}")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        import httpx

        self.starts += 1
        with open(self.folder / f"server-{self.starts}.log", "w") as log:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                          "127.0.0.1", "--port", str(self.port)], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start: "
                                   f"{(self.folder / f'server-{self.starts}.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def own_server(tmp_path: Path):
    server = PrefectServer(tmp_path / "server")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


def flow_run_states(api_url: str) -> list[tuple[str, str]]:
    """(flow name, state type) of every flow run on the server at `api_url`."""
    import httpx

    runs = httpx.post(f"{api_url}/flow_runs/filter", json={}, timeout=30).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api_url}/flows/filter", json={}, timeout=30).json()}
    return [(flows.get(r["flow_id"], "?"), r["state_type"]) for r in runs]


def train_until_tuning(spec: Path, artifacts: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`trainpipe train SPEC --json` started, returned once its tuning has begun (the run well under way)."""
    proc = spawn([sys.executable, "-m", "trainpipe", "train", str(spec), "--json"], log, env)
    deadline = time.monotonic() + 240
    while not journal_trials_safe(artifacts):
        assert proc.poll() is None, log.with_suffix(".err").read_text()[-3000:]
        assert time.monotonic() < deadline, "tuning never started"
        time.sleep(0.05)
    return proc


def test_the_prefect_server_restarted_during_a_run(tmp_path: Path, kill_data: Path, own_server: PrefectServer):
    """SIGTERM to the run's Prefect server once tuning has begun, the same server started again on its port and
    database: the run ends either completed or marked failed/crashed on the server (measured here: completed,
    the client retrying its API calls while the server was down; task-run events sent meanwhile are dropped
    with an ERROR line on stderr), and a re-run completes with a committed version and a verified audit log."""
    spec, artifacts = write_spec(tmp_path, kill_data), tmp_path / "art"
    env = server_env(own_server.url)
    log = tmp_path / "during"
    proc = train_until_tuning(spec, artifacts, log, env)
    own_server.stop()
    down_at = time.monotonic()
    own_server.start()  # same port, same database
    print(f"server down for {time.monotonic() - down_at:.1f} s")
    code = proc.wait(timeout=300)
    err = log.with_suffix(".err").read_text()
    states = flow_run_states(own_server.url)
    print(f"run exited {code}; flow runs on the server: {states}; task runs: {task_run_states(own_server.url)}; "
          f"stderr lines: {len(err.splitlines())}, tail: {err[-600:]}")
    train_states = [s for name, s in states if name == "trainpipe-train"]
    assert len(train_states) == 1
    if code == 0:
        assert train_states == ["COMPLETED"]
        assert registry.list_versions(str(artifacts), "killed") == [1]
    else:
        assert train_states[0] in ("FAILED", "CRASHED"), train_states
        assert "Traceback" not in err and "trainpipe: error:" in err

    again = subprocess.run([sys.executable, "-m", "trainpipe", "train", str(spec), "--json"], cwd=ROOT, env=env,
                           check=False, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["version"] == 1 and registry.list_versions(str(artifacts), "killed") == [1]
    assert audit_verify(str(artifacts), "killed", env) == 0
    assert [s for name, s in flow_run_states(own_server.url) if name == "trainpipe-train"][-1:] == ["COMPLETED"]


def task_run_states(api_url: str) -> dict[str, int]:
    """How many task runs the server holds per state type."""
    import collections

    import httpx

    runs = httpx.post(f"{api_url}/task_runs/filter", json={}, timeout=30).json()
    return dict(collections.Counter(r["state_type"] for r in runs))


def journal_trials_safe(artifacts: Path) -> list:
    try:
        return journal_trials(artifacts)
    except (ValueError, KeyError, IndexError):
        return []
