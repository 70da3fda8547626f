"""The Optuna study: its storage (in-memory, journal file in the artifact store, or a database), its
name, and the redaction of storage URLs wherever they are shown."""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import optuna
from fsspec.implementations.local import LocalFileSystem

from tasks.common import content_fingerprint
from tasks.tune.sampler import ABANDONED_ATTR, TrialSeededSampler, make_pruner
from trainpipe import storage
from trainpipe.errors import SpecError, TuningError
from trainpipe.results import Matrices
from trainpipe.spec import TaskType, TrainSpec, TuningSpec

# Database storages: a running trial records a heartbeat; one silent for the grace period is failed
# (its process died) and its place in the budget is freed. Journal files have no heartbeat: there a
# RUNNING trial of another process older than STALE_RUNNING_SECONDS is taken as abandoned. On either, a
# RUNNING trial whose owner (OWNER_ATTR: host, pid, process start) was a process of this host that is gone
# is abandoned at once (`fail_abandoned_trials`).
HEARTBEAT_SECONDS, HEARTBEAT_GRACE_SECONDS = 10, 60


STALE_RUNNING_SECONDS = 3600


OWNER_ATTR = "owner"


def _process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux /proc), telling a reused pid from its first
    owner; None where /proc is not there or the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def this_process() -> dict[str, Any]:
    """What a trial records about the process running it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def owner_is_gone(owner: Any) -> bool:
    """True only when the owner was a process of this host that no longer runs; unknown owners and other
    hosts' processes are never taken as gone."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    pid = int(owner["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's live process
    started = _process_start(pid)
    if os.path.isdir("/proc"):
        return started is None or (owner.get("start") is not None and started != owner["start"])
    return False


def fail_abandoned_trials(study: optuna.Study, mine: set[int]) -> list[int]:
    """Fail the RUNNING trials of dead processes of this host (killed mid-trial) and mark them abandoned, so
    their places in the budget (and their numbers' draws, see TrialSeededSampler) go to the next trials."""
    from optuna.trial import TrialState

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in mine or not owner_is_gone(t.user_attrs.get(OWNER_ATTR)):
            continue
        owner = t.user_attrs[OWNER_ATTR]
        message = f"abandoned: process {owner['pid']} on {owner['host']} died while running it"
        study._storage.set_trial_user_attr(t._trial_id, ABANDONED_ATTR, True)
        study._storage.set_trial_user_attr(t._trial_id, "error", message)
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another process failed or finished it meanwhile
            continue
        failed.append(t.number)
    return failed


def redact_url(url: str) -> str:
    """A storage URL without its password."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def journal_path(artifacts: str, study_name: str) -> str:
    """The study's journal file in the artifact store's local folder."""
    fs, path = storage.get_fs(artifacts)
    if not isinstance(fs, LocalFileSystem):
        raise SpecError(f"tuning.storage 'journal' needs a local artifact store, not {artifacts!r}; "
                        "give a database URL (e.g. postgresql://...) instead")
    return os.path.join(path, "tuning", f"{study_name}.journal")


def open_storage(tuning: TuningSpec, artifacts: str, study_name: str) -> tuple[Any, str]:
    """The Optuna storage and how the manifest names it (passwords redacted)."""
    if tuning.storage is None:
        return optuna.storages.InMemoryStorage(), "in-memory"
    if tuning.storage == "journal":
        path = journal_path(artifacts, study_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend), f"journal:{path}"
    url, described = resolve_storage_url(tuning.storage)
    try:
        return open_database(url), described
    except Exception as error:  # noqa: BLE001 - driver and connection errors vary by database
        raise TuningError(f"tuning.storage {described}: cannot open it: "
                          f"{type(error).__name__}: {redact_url(str(error)).replace(url, described)}") from None


def resolve_storage_url(storage_ref: str) -> tuple[str, str]:
    """The database URL a spec's tuning.storage names (env:NAME is read from this worker's environment) and how
    it may be shown: the reference, or the URL without its password."""
    if storage_ref.startswith("secret:"):
        url = secret_block_value(storage_ref, storage_ref[7:])
        name = f"the Secret block {storage_ref[7:]}"
    elif storage_ref.startswith("env:"):
        name = storage_ref[4:]
        url = os.environ.get(name)
        if not url:
            raise TuningError(f"tuning.storage {storage_ref}: the environment variable {name} is not set on this "
                              "worker")
    else:
        return storage_ref, redact_url(storage_ref)
    if "://" not in url:
        raise TuningError(f"tuning.storage {storage_ref}: {name} does not hold a storage URL such as "
                          "postgresql://user:password@host/db")
    return url, f"{storage_ref} ({redact_url(url)})"


def secret_block_value(storage_ref: str, block_name: str) -> str:
    """The value of a Prefect Secret block, read from the Prefect API this worker talks to."""
    from prefect.blocks.system import Secret

    try:
        # _sync: a sync call even where a task runs inside an event loop's thread
        value = Secret.load(block_name, _sync=True).get()
    except ValueError:
        raise TuningError(f"tuning.storage {storage_ref}: no Prefect Secret block named {block_name!r} on this "
                          "worker's Prefect API (create it in the UI or with Secret(value=URL).save(NAME))") from None
    return str(value)


def open_database(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage; workers that start together on a database without Optuna's tables race to create
    them (PostgreSQL answers the losers with a unique violation), so a lost race is tried again."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                                  grace_period=HEARTBEAT_GRACE_SECONDS)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)
    raise AssertionError("unreachable")


def open_study(tuning: TuningSpec, artifacts: str, study_name: str, seed: int,
               num_boost_round: int) -> tuple[optuna.Study, str]:
    """Create the study, or load it when the storage already holds one of that name (resume)."""
    backend, described = open_storage(tuning, artifacts, study_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trainpipe reports trials itself (leaderboard, logs)
    study = optuna.create_study(storage=backend, study_name=study_name, direction="minimize",
                                sampler=TrialSeededSampler(seed), pruner=make_pruner(tuning.pruner, num_boost_round),
                                load_if_exists=True)
    return study, described


def default_study_name(spec: TrainSpec, matrices: Matrices, task_type: TaskType,
                       n_classes: Optional[int]) -> str:
    """The model name plus a key of everything that decides the trials: a re-run resumes the same study."""
    key = content_fingerprint(matrices.fingerprint, task_type, n_classes, spec.seed,
                              spec.xgboost.model_dump(mode="json"),
                              spec.tuning.model_dump(mode="json", exclude={"storage", "study_name",
                                                                           "timeout_seconds"}))
    return f"{spec.name}-{key[:16]}"
