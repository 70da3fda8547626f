"""Deployment set-up pieces that need no server: pool templates, the fit subflow's worker settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.infra import POOLS, load_template
from flows.fit import fit_deployment
from tasks.compute import worker_xgboost
from trainpipe.boosting import cuda_visible
from trainpipe.errors import SpecError
from trainpipe.spec import XGBoostSpec, parse_spec


def test_pool_templates_are_process_templates_and_only_gpu_selects_cuda():
    envs = {}
    for plan in POOLS:
        template = load_template(plan)
        assert template["job_configuration"]["env"] == "{{ env }}"
        envs[plan.name] = template["variables"]["properties"]["env"]["default"]
    assert envs["gpu"]["TRAINPIPE_XGBOOST_DEVICE"] == "cuda"
    assert envs["gpu"]["TRAINPIPE_CONCURRENCY_LIMIT"] == "gpu"
    assert "TRAINPIPE_XGBOOST_DEVICE" not in envs["cpu"]


def test_a_broken_template_is_named(tmp_path: Path):
    (tmp_path / "cpu-pool.json").write_text("{not json")
    with pytest.raises(SpecError, match="cpu-pool.json is not valid JSON"):
        load_template(POOLS[0], tmp_path)
    (tmp_path / "cpu-pool.json").write_text(json.dumps({"variables": {}}))
    with pytest.raises(SpecError, match="needs 'job_configuration'"):
        load_template(POOLS[0], tmp_path)
    with pytest.raises(SpecError, match="not found"):
        load_template(POOLS[1], tmp_path)


def test_worker_device_comes_from_the_pool_environment(monkeypatch):
    spec = XGBoostSpec()
    monkeypatch.delenv("TRAINPIPE_XGBOOST_DEVICE", raising=False)
    assert worker_xgboost(spec).device == "cpu"
    monkeypatch.setenv("TRAINPIPE_XGBOOST_DEVICE", "cuda")
    if cuda_visible():
        assert worker_xgboost(spec).device == "cuda"
    else:  # this machine: the pool asks for a GPU the worker lacks
        with pytest.raises(SpecError, match="TRAINPIPE_XGBOOST_DEVICE=cuda .* never falls back"):
            worker_xgboost(spec)
    monkeypatch.setenv("TRAINPIPE_XGBOOST_DEVICE", "cpu")
    assert worker_xgboost(XGBoostSpec(device="cuda")).device == "cpu"
    monkeypatch.setenv("TRAINPIPE_XGBOOST_DEVICE", "tpu")
    with pytest.raises(SpecError, match="TRAINPIPE_XGBOOST_DEVICE='tpu'"):
        worker_xgboost(spec)


def test_compute_spec_names_the_pool_deployment():
    spec = parse_spec({"name": "m", "data": {"uris": "x.csv"}, "target": "y",
                       "compute": {"train_pool": "gpu", "env": {"OMP_NUM_THREADS": "4"}}})
    assert fit_deployment(spec.compute.train_pool) == "trainpipe-fit/fit-gpu"
    assert parse_spec({"name": "m", "data": {"uris": "x.csv"}, "target": "y"}).compute.train_pool is None
    with pytest.raises(SpecError, match="compute.train_pool"):
        parse_spec({"name": "m", "data": {"uris": "x.csv"}, "target": "y", "compute": {"train_pool": "bad pool"}})


def test_setup_and_notify_need_a_server(monkeypatch, tmp_path: Path, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.main import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / "a.csv").write_text("x\n1\n")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # also while a test server is up
        assert main(["infra", "setup"]) == 2
        assert "PREFECT_API_URL is not set" in capsys.readouterr().err
        assert main(["notify", str(tmp_path)]) == 2
        assert "PREFECT_API_URL is not set" in capsys.readouterr().err
    assert main(["infra", "setup", "--gpu-slots", "0"]) == 2
    assert "--gpu-slots must be at least 1, not 0" in capsys.readouterr().err
