"""compute.engine dask: the scheduler address, the dask pool template, the partition format."""

from __future__ import annotations

import os

import polars as pl
import pytest
from pydantic import ValidationError

from cli.infra import POOLS, load_template, with_pool_env
from trainpipe.cluster import ADDRESS_ENV, scheduler_address
from trainpipe.errors import SpecError
from trainpipe.matrices import partition_uris, read_matrix, write_matrix
from trainpipe.spec import ComputeSpec


def test_engine_defaults_to_local():
    assert ComputeSpec().engine == "local"
    with pytest.raises(ValidationError):
        ComputeSpec(engine="spark")
    with pytest.raises(ValidationError, match="dask_address"):
        ComputeSpec(engine="dask", dask_address="localhost 8786")


def test_address_from_the_spec_then_the_environment_else_a_clear_error(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    with pytest.raises(SpecError, match="compute.dask_address or TRAINPIPE_DASK_ADDRESS"):
        scheduler_address(ComputeSpec(engine="dask"))
    monkeypatch.setenv(ADDRESS_ENV, "tcp://10.0.0.5:8786")
    assert scheduler_address(ComputeSpec(engine="dask")) == "tcp://10.0.0.5:8786"
    assert scheduler_address(ComputeSpec(engine="dask", dask_address="tcp://h:1")) == "tcp://h:1"


def test_dask_pool_carries_the_scheduler_and_data_roots():
    plan = next(p for p in POOLS if p.name == "dask")
    template = load_template(plan)
    env = template["variables"]["properties"]["env"]["default"]
    assert set(env) >= {"TRAINPIPE_DASK_ADDRESS", "TRAINPIPE_DATA_ROOTS"}
    filled = with_pool_env(template, {"TRAINPIPE_DASK_ADDRESS": "tcp://s:8786", "TRAINPIPE_DATA_ROOTS": None})
    assert filled["variables"]["properties"]["env"]["default"]["TRAINPIPE_DASK_ADDRESS"] == "tcp://s:8786"
    assert template["variables"]["properties"]["env"]["default"]["TRAINPIPE_DASK_ADDRESS"] == ""  # not mutated


def test_matrix_partitions_are_bounded_ordered_and_read_back_whole(tmp_path):
    frame = pl.DataFrame({"x": list(range(2500)), "__label__": [0.0] * 2500})
    uris, digests = write_matrix(frame, str(tmp_path / "train"), 1000)
    assert [u.rsplit("/", 1)[1] for u in uris] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pl.read_parquet(u).height for u in uris] == [1000, 1000, 500] and len(set(digests)) == 3
    assert partition_uris(str(tmp_path / "train")) == uris
    assert read_matrix(str(tmp_path / "train")).equals(frame)
    empty, _ = write_matrix(frame.head(0), str(tmp_path / "test"), 1000)
    assert len(empty) == 1 and read_matrix(str(tmp_path / "test")).columns == ["x", "__label__"]


def test_layout_names_workers_by_sorted_index_not_address():
    from trainpipe.cluster import layout

    then = {"name": "dask", "workers": ["tcp://a:1", "tcp://b:2"],
            "placement": {"train": ["tcp://a:1", "tcp://a:1", "tcp://b:2"], "valid": ["tcp://b:2"]}}
    now = {"name": "dask", "workers": ["tcp://c:7", "tcp://d:8"],
           "placement": {"train": ["tcp://c:7", "tcp://c:7", "tcp://d:8"], "valid": ["tcp://d:8"]}}
    assert layout(then) == layout(now) == {"workers": 2, "train": [0, 0, 1], "valid": [1]}
    three = {"name": "dask", "workers": ["x", "y", "z"], "placement": {"train": ["x", "y", "z"], "valid": ["z"]}}
    assert layout(three) != layout(then)
    assert layout({"name": "dask", "workers": ["x"]}) is None  # trained before placement was recorded


def test_dask_reproduce_on_another_layout_compares_metrics_within_the_tolerance():
    from flows.reproduce import CHECK_METRICS, _compare_metrics

    close = _compare_metrics({}, {"auc": 0.90, "logloss": 0.30, "n": 5}, {"auc": 0.895, "logloss": 0.304, "n": 5},
                             0.01, "other workers")
    assert close["check"] == CHECK_METRICS and close["reproduced"]
    assert close["metric_differences"]["auc"] == pytest.approx(0.005)
    far = _compare_metrics({}, {"auc": 0.90}, {"auc": 0.85}, 0.01, "other workers")
    assert not far["reproduced"] and "auc" in far["reason"]


def test_a_foreground_run_turns_prefect_heartbeats_off_unless_the_environment_sets_them(monkeypatch):
    """Prefect 3.9 joins its heartbeat thread (1 s sleeps) at the end of every flow run: `trainpipe train` in the
    foreground runs without heartbeats, and a user who set their frequency keeps them."""
    from prefect.settings import get_current_settings

    from cli.logs import HEARTBEAT_SETTINGS, foreground_run

    for name in HEARTBEAT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with foreground_run():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with foreground_run():
        assert get_current_settings().flows.heartbeat_frequency == default  # left as the environment set it


def test_the_embedded_server_logs_only_critical_errors_unless_the_environment_says(monkeypatch):
    """The embedded server inherits the CLI's environment and writes to the user's stderr: stopped right after a
    run that failed at once, its services log the cancelled flush with a traceback under trainpipe's own error.
    The CLI turns the server's loggers down to CRITICAL, and keeps a level the user set."""
    from cli.logs import prepare_prefect

    for name in ("PREFECT_SERVER_LOGGING_LEVEL", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_UI_ENABLED",
                 "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    prepare_prefect()
    assert os.environ["PREFECT_SERVER_LOGGING_LEVEL"] == "CRITICAL"
    monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "DEBUG")
    prepare_prefect()
    assert os.environ["PREFECT_SERVER_LOGGING_LEVEL"] == "DEBUG"


def test_a_configured_prefect_api_is_used_as_it_is_and_no_server_is_started(monkeypatch):
    """With PREFECT_API_URL set (or ephemeral mode off), the CLI starts no server and changes no setting."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, get_current_settings, \
        temporary_settings

    from cli.embedded import EmbeddedServer, prefect_api

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
        with prefect_api() as api:
            assert not isinstance(api, EmbeddedServer)
            api.wait()  # nothing to wait for
            assert get_current_settings().api.url == "http://127.0.0.1:9/api"
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_ENABLED: False}, restore_defaults={PREFECT_API_URL}):
        monkeypatch.delenv("PREFECT_API_URL")
        with prefect_api() as api:
            assert not isinstance(api, EmbeddedServer)
        assert "PREFECT_API_URL" not in os.environ


def _server_children() -> list[int]:
    """Pids of Prefect API server processes that are children of this process."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"prefect.server.api.server:create_app" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_an_api_only_the_settings_name_wins_and_the_early_server_is_stopped(monkeypatch):
    """The environment names no API, so the CLI starts its server before reading Prefect's settings; a profile's
    API (here a temporary setting) then wins and that child is stopped unused."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.embedded import EmbeddedServer, prefect_api

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = set(_server_children())  # a test session's own server (prefect_test_harness) is one too
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with prefect_api() as api:
            assert not isinstance(api, EmbeddedServer)
            assert set(_server_children()) == before
        assert "PREFECT_API_URL" not in os.environ
