"""Engine dask: one booster trained over a real Dask cluster on Parquet partitions.

The cluster is started from the command line as a user would (`dask scheduler`, two `dask worker --nthreads 1
--memory-limit 1GB` processes on 127.0.0.1), once for the module; the worker-loss test starts its own.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import polars as pl
import pytest

pytest.importorskip("distributed")

from tasks.features import fit_transform
from tasks.train import fit_booster
from tests.integration.dask_cli import cli_cluster
from tests.unit.conftest import make_rows
from trainpipe import storage
from trainpipe.boosting import booster_params, load_matrix, model_bytes, training_matrix
from trainpipe.cluster import fit_on_cluster
from trainpipe.errors import TrainpipeError
from trainpipe.matrices import read_matrix, write_matrix
from trainpipe.spec import FeatureSpec, XGBoostSpec
from trainpipe.transform import LABEL, matrix_frame

ROWS = 12_000
PARTITION_ROWS = 1_500


MEMORY_LIMIT = "1GB"  # per worker process (dask's --memory-limit: the nanny restarts a worker past 95 % of it)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with cli_cluster(2, MEMORY_LIMIT, nthreads=1, folder=tmp_path_factory.mktemp("dask-cli")) as started:
        yield started


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    frame = make_rows(ROWS, "binary", seed=3)
    n = ROWS
    parts = {"train": frame[: n * 6 // 10], "valid": frame[n * 6 // 10 : n * 8 // 10], "test": frame[n * 8 // 10 :]}
    transform = fit_transform(parts["train"], "y", "binary", ["neg", "pos"], ["rid"], FeatureSpec())
    partitions = {}
    for name, part in parts.items():
        partitions[name], _ = write_matrix(matrix_frame(part, transform, name), str(root / name), PARTITION_ROWS)
    return {"root": root, "partitions": partitions, "types": transform["feature_types"]}


def logloss(booster, data) -> float:
    test = read_matrix(str(data["root"] / "test"))
    p = np.clip(booster.predict(load_matrix(test, data["types"])), 1e-7, 1 - 1e-7)
    y = test.get_column(LABEL).to_numpy()
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_partitions_hold_bounded_rows_and_read_back_whole(data):
    uris = data["partitions"]["train"]
    assert len(uris) == 5 and uris[0].endswith("part-00000.parquet")
    heights = [pl.read_parquet(u).height for u in uris]
    assert max(heights) <= PARTITION_ROWS and sum(heights) == ROWS * 6 // 10
    assert read_matrix(str(data["root"] / "train")).height == sum(heights)


def test_dask_booster_is_close_to_the_local_one(cluster, data):
    params = booster_params(XGBoostSpec(max_depth=4), "binary", None, seed=5)
    booster, info = fit_on_cluster(cluster.address, data["partitions"], data["types"], params, 200, 10,
                                   refit=False)
    assert info["engine"]["scheduler"] == cluster.address and len(info["engine"]["workers"]) == 2
    train, valid = (read_matrix(str(data["root"] / p)) for p in ("train", "valid"))
    dtrain = training_matrix(train, data["types"], params["max_bin"])
    local, _ = fit_booster(dtrain, training_matrix(valid, data["types"], params["max_bin"], ref=dtrain), params,
                           200, 10)
    dask_loss, local_loss = logloss(booster, data), logloss(local, data)
    # Distributed sketching differs from single-node by design: stated tolerance 0.02 logloss.
    assert abs(dask_loss - local_loss) < 0.02, (dask_loss, local_loss)
    print(f"holdout logloss dask {dask_loss:.4f} local {local_loss:.4f}")
    assert dask_loss < 0.45  # it learned (a constant predictor scores about 0.69)


GEN_COLUMNS, GEN_PARTITION_ROWS = 40, 50_000
GEN_ROWS = {"train": 700_000, "valid": 100_000, "test": 100_000}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A learnable numeric matrix written partition by partition (float32 features, as the features stage does)."""
    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(11)
    partitions = {}
    for part, rows in GEN_ROWS.items():
        partitions[part] = []
        for index, start in enumerate(range(0, rows, GEN_PARTITION_ROWS)):
            n = min(GEN_PARTITION_ROWS, rows - start)
            x = rng.normal(size=(n, GEN_COLUMNS)).astype(np.float32)
            signal = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3] + rng.normal(scale=0.7, size=n)
            frame = pl.DataFrame({f"x{i}": x[:, i] for i in range(GEN_COLUMNS)}).with_columns(
                pl.Series(LABEL, (signal > 0.3).astype(np.float64)))
            (root / part).mkdir(exist_ok=True)
            uri = str(root / part / f"part-{index:05d}.parquet")
            frame.write_parquet(uri)
            partitions[part].append(uri)
    return {"root": root, "partitions": partitions, "types": ["q"] * GEN_COLUMNS}


def test_a_generated_matrix_is_held_by_both_cli_workers_and_scores_like_one_machine(cluster, generated):
    from distributed import Client

    params = booster_params(XGBoostSpec(max_depth=4, learning_rate=0.3), "binary", None, seed=5)
    booster, info = fit_on_cluster(cluster.address, generated["partitions"], generated["types"], params, 40, 5,
                                   refit=False)
    workers = info["engine"]["workers"]
    held = info["engine"]["placement"]  # who_has of every partition, observed right after it was read
    assert len(workers) == 2 and len(held["train"]) == len(generated["partitions"]["train"])
    assert all(h in workers for h in held["train"])  # each partition on exactly one worker
    assert set(held["train"]) == set(workers) and set(held["valid"]) == set(workers)  # both workers hold some
    with Client(cluster.address) as client:
        peaks = client.run(lambda dask_worker: max(dask_worker.monitor.quantities["memory"]))
    matrix_mb = sum(GEN_ROWS[p] for p in ("train", "valid")) * GEN_COLUMNS * 4 / 1e6
    print(f"train+valid float32 matrix {matrix_mb:.0f} MB; peak worker RSS "
          f"{', '.join(f'{v / 1e6:.0f} MB' for v in peaks.values())} (limit {MEMORY_LIMIT} each)")
    train, valid, test = (read_matrix(str(generated["root"] / p)) for p in ("train", "valid", "test"))
    dtrain = training_matrix(train, generated["types"], params["max_bin"])
    local, _ = fit_booster(dtrain, training_matrix(valid, generated["types"], params["max_bin"], ref=dtrain),
                           params, 40, 5)
    dtest = load_matrix(test, generated["types"])
    y = test.get_column(LABEL).to_numpy()

    def loss(model) -> float:
        p = np.clip(model.predict(dtest), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    dask_loss, local_loss = loss(booster), loss(local)
    print(f"holdout logloss dask {dask_loss:.4f} local {local_loss:.4f} ({test.height} rows)")
    # Distributed sketching differs from single-node by design: stated tolerance 0.01 logloss.
    assert abs(dask_loss - local_loss) < 0.01, (dask_loss, local_loss)
    assert dask_loss < 0.5  # it learned (a constant predictor scores about 0.69)


@pytest.mark.parametrize("external_memory", ["off", "on"])  # in memory (xgboost.dask) and out of core
def test_same_seed_partitions_and_workers_give_the_same_booster_bytes(cluster, data, external_memory):
    params = booster_params(XGBoostSpec(max_depth=4), "binary", None, seed=5)
    runs = [fit_on_cluster(cluster.address, data["partitions"], data["types"], params, 200, 10, refit=True,
                           external_memory=external_memory) for _ in range(3)]
    assert all(info["engine"]["external_memory"]["on"] is (external_memory == "on") for _, info in runs)
    digests = [storage.sha256_bytes(model_bytes(b)) for b, _ in runs]
    placements = [info["engine"]["placement"] for _, info in runs]
    print("booster sha256", [d[:12] for d in digests], "placement", placements[0])
    assert placements[0] == placements[1] == placements[2]
    assert set(placements[0]["train"]) == set(runs[0][1]["engine"]["workers"])
    assert digests[0] == digests[1] == digests[2]


@pytest.mark.parametrize("external_memory", ["off", "on"])  # in memory (xgboost.dask) and out of core
def test_a_killed_worker_ends_in_bounded_time_with_a_retry_or_a_clear_error(data, tmp_path, external_memory):
    from distributed import Client

    with cli_cluster(2, MEMORY_LIMIT, folder=tmp_path / "dask-cli") as local:  # its own: a worker is killed
        with Client(local.address) as client:
            pids = client.run(os.getpid)
        victim = sorted(pids.items())[0]

        def kill_soon() -> None:
            time.sleep(2.0)
            os.kill(victim[1], signal.SIGKILL)

        params = booster_params(XGBoostSpec(max_depth=8, learning_rate=0.01), "binary", None, seed=5)
        threading.Thread(target=kill_soon, daemon=True).start()
        started = time.monotonic()
        try:
            booster, info = fit_on_cluster(local.address, data["partitions"], data["types"], params,
                                           3000, 3000, refit=False, grace_s=5, external_memory=external_memory)
        except TrainpipeError as error:
            message = str(error)
            print("clear error:", message)
            assert local.address in message and victim[0] in message
        else:  # retried on what remained (the nanny restarts a killed worker)
            print("retried on", info["engine"]["workers"])
            assert victim[0] not in info["engine"]["workers"]
            assert info["engine"]["external_memory"]["on"] is (external_memory == "on")
        elapsed = time.monotonic() - started
        print(f"killed {victim[0]}: ended after {elapsed:.1f} s")
        assert elapsed < 120


def test_tuning_trials_spread_over_both_workers_none_lost_or_repeated(cluster, data, tmp_path):
    from distributed import Client

    from tasks.tune.cluster import cluster_submitter, cluster_trial, trial_record_uri
    from tasks.tune.run import TuningRun
    from trainpipe.results import Matrices
    from trainpipe.spec import parse_spec

    uris = {p: str(data["root"] / p) for p in ("train", "valid", "test")}
    matrices = Matrices(uris=uris, partitions=data["partitions"], transform_uri=str(data["root"] / "t.json"),
                        features=["x1", "x2", "c"], feature_types=data["types"], dropped=[], fingerprint="f" * 64,
                        stage_key="k")
    spec = parse_spec({"name": "tuned", "data": {"uris": ["unused.csv"]}, "target": "y", "seed": 7,
                       "artifacts": str(tmp_path / "art"), "xgboost": {"num_boost_round": 60},
                       "tuning": {"trials": 6, "parallelism": 2},
                       "compute": {"engine": "dask", "dask_address": cluster.address}})
    runs = []
    with Client(cluster.address) as client:
        for attempt in range(2):
            run = TuningRun(spec.model_copy(update={"artifacts": str(tmp_path / f"art{attempt}")}), matrices,
                            "binary", None)
            run.search(cluster_submitter(client, run, matrices))
            runs.append(run)
        records = [storage_record(trial_record_uri(runs[0].folder, n)) for n in range(6)]
        assert {r["worker"] for r in records} == set(client.scheduler_info()["workers"])  # both workers
        again = client.submit(cluster_trial, matrices.model_dump(mode="json"), None, 7, 0, records[0]["params"],
                              60, 10, trial_record_uri(runs[0].folder, 0), pure=False).result()
        assert again["reused"] and again["value"] == records[0]["value"]  # a re-run returns the recorded result
    trials = [sorted(t.number for t in r.study.trials) for r in runs]
    assert trials == [list(range(6))] * 2  # none lost, none repeated
    assert [(t.params, t.value) for t in runs[0].study.trials] == [(t.params, t.value) for t in runs[1].study.trials]


def storage_record(uri: str) -> dict:
    from trainpipe import storage

    return storage.read_json(uri)


def test_train_flow_with_engine_dask_stores_a_model_close_to_the_local_one(cluster, tmp_path, penguins_csv):
    from flows.train import train_flow
    from trainpipe import registry
    from trainpipe.spec import parse_spec

    def spec(engine: str, folder: str):
        return parse_spec({"name": "penguins", "data": {"uris": [str(penguins_csv)]}, "target": "species",
                           "artifacts": str(tmp_path / folder),
                           "compute": {"engine": engine, "dask_address": cluster.address}})

    local = train_flow(spec("local", "local"))
    dask = train_flow(spec("dask", "dask"))
    assert registry.list_versions(str(tmp_path / "dask"), "penguins") == [1]
    recorded = [json.loads(p.read_text()) for p in (tmp_path / "dask" / "cache" / "train").rglob("_SUCCESS")]
    assert any((r.get("engine") or {}).get("scheduler") == cluster.address for r in recorded)
    print("metrics dask", dask["metrics"], "local", local["metrics"])
    for name, value in local["metrics"].items():
        if isinstance(value, float):
            assert abs(dask["metrics"][name] - value) < 0.05, (name, dask["metrics"][name], value)

    # reproduce reads the stored engine: dask, retrained on the same workers and partitions -> the bytes check
    from flows.reproduce import reproduce

    manifest = registry.read_manifest(str(tmp_path / "dask"), "penguins", 1)
    assert manifest["training"]["engine"]["name"] == "dask"
    report = reproduce(str(tmp_path / "dask"), "penguins:1")
    print("reproduce:", report["check"], "-", report["check_reason"], "-", report["reason"])
    assert report["engine"] == "dask" and report["layout_now"] == report["layout_then"]
    assert report["check"] == "byte-identical" and report["byte_identical"] and report["reproduced"]


def test_train_flow_out_of_core_on_the_cluster_records_the_choice_and_scores_like_local(cluster, tmp_path,
                                                                                       penguins_csv):
    """compute.external_memory on with engine dask: the data stages stream and the fit runs XGBoost's
    distributed external memory on the workers (one partition a part here, so one worker trains)."""
    from flows.train import train_flow
    from trainpipe.spec import parse_spec

    def spec(engine: str, folder: str):
        return parse_spec({"name": "penguins", "data": {"uris": [str(penguins_csv)]}, "target": "species",
                           "artifacts": str(tmp_path / folder),
                           "compute": {"engine": engine, "dask_address": cluster.address, "external_memory": "on"}})

    local = train_flow(spec("local", "local"))
    dask = train_flow(spec("dask", "dask"))
    assert dask["memory"]["out_of_core"] is True
    recorded = [json.loads(p.read_text()) for p in (tmp_path / "dask" / "cache" / "train").rglob("_SUCCESS")]
    engines = [r["engine"] for r in recorded if r.get("engine")]
    assert engines and engines[0]["external_memory"]["on"] and engines[0]["scheduler"] == cluster.address
    fit = next(r for r in recorded if r.get("engine"))["external_memory"]
    assert fit["partitions_read"] > 0 and set(fit["per_worker"]) <= set(engines[0]["workers"])
    print("metrics dask out of core", dask["metrics"], "local out of core", local["metrics"])
    for name, value in local["metrics"].items():
        if isinstance(value, float):
            assert abs(dask["metrics"][name] - value) < 0.05, (name, dask["metrics"][name], value)
