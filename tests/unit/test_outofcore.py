"""trainpipe.outofcore: how much memory is left, when auto picks external memory, and the external-memory fit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from trainpipe.matrices import write_matrix
from trainpipe.outofcore import (
    available_memory,
    matrix_bytes,
    predict_partitions,
    read_labels,
    use_external_memory,
)
from trainpipe.results import Matrices
from trainpipe.spec import XGBoostSpec
from trainpipe.transform import LABEL


def test_available_memory_is_positive_and_at_most_the_host_total():
    total = None
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    room = available_memory()
    assert 0 < room <= total


def test_available_memory_obeys_an_address_space_limit():
    """Under `ulimit -v` the room is what the limit leaves, far below the host's free memory."""
    limit = 3 << 30  # 3 GiB of address space: enough for numpy and polars to load, far below this host
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "from trainpipe.outofcore import available_memory\n"
        "print(available_memory())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    room = int(out.stdout.strip())
    assert 0 <= room < limit


def test_auto_takes_external_memory_only_when_the_matrix_outgrows_a_third_of_the_room():
    rows, features = 1_000_000, 30
    size = matrix_bytes(rows, features)
    assert size == 120_000_000
    assert use_external_memory("auto", rows, features, available=3 * size - 1)
    assert not use_external_memory("auto", rows, features, available=3 * size + 1)
    assert use_external_memory("on", 1, 1, available=1 << 40)
    assert not use_external_memory("off", rows, features, available=1)


def _matrices(tmp_path, rows_per_partition: int) -> tuple[Matrices, dict[str, pl.DataFrame]]:
    rng = np.random.default_rng(7)
    parts = {}
    for part, n in (("train", 900), ("valid", 300), ("test", 300)):
        a, b = rng.normal(size=n), rng.normal(size=n)
        label = ((a + 0.5 * b + rng.normal(scale=0.5, size=n)) > 0).astype(np.float64)
        parts[part] = pl.DataFrame({"a": a, "b": b, LABEL: label})
    uris, partitions = {}, {}
    for part, frame in parts.items():
        folder = str(tmp_path / "features" / part)
        partitions[part], _ = write_matrix(frame, folder, rows_per_partition)
        uris[part] = folder
    matrices = Matrices(fingerprint="f" * 64, stage_key="features", uris=uris, rows={p: f.height for p, f in parts.items()}, partitions=partitions,
                        transform_uri=str(tmp_path / "transform.json"), features=["a", "b"],
                        feature_types=["q", "q"], dropped=[])
    return matrices, parts


@pytest.mark.parametrize("refit", [False, True])
def test_external_memory_fit_reads_every_partition_and_learns_like_the_in_memory_fit(tmp_path, refit):
    from sklearn.metrics import roc_auc_score

    from tasks.train import fit_booster, fit_external, refit_booster
    from trainpipe.boosting import booster_params, training_matrix

    matrices, parts = _matrices(tmp_path, rows_per_partition=200)
    assert [len(matrices.partitions[p]) for p in ("train", "valid", "test")] == [5, 2, 2]
    spec = XGBoostSpec(nthread=1, num_boost_round=40, early_stopping_rounds=10, refit=refit)
    params = booster_params(spec, "binary", None, 0)
    booster, info = fit_external(matrices, params, spec)
    record = info["external_memory"]
    assert (record["train_partitions"], record["valid_partitions"]) == (5, 2)
    assert record["partitions_read"] >= 7  # every partition went through the iterator at least once
    assert record["cache_bytes"] > 0  # the pages were cached on disk, not held in memory
    assert info["refit_on_train_and_valid"] is refit

    labels, external_preds = predict_partitions(booster, matrices.partitions["test"], matrices.feature_types)
    np.testing.assert_array_equal(labels, parts["test"][LABEL].to_numpy())
    np.testing.assert_array_equal(read_labels(matrices.partitions["test"]), labels)

    dtrain = training_matrix(parts["train"], matrices.feature_types, params["max_bin"])
    dvalid = training_matrix(parts["valid"], matrices.feature_types, params["max_bin"], ref=dtrain)
    memory_booster, memory_info = fit_booster(dtrain, dvalid, params, 40, 10)
    if refit:
        memory_booster = refit_booster(matrices.partitions["train"], matrices.partitions["valid"],
                                       matrices.feature_types, params, memory_info["best_iteration"] + 1)
    import xgboost as xgb

    test = parts["test"]
    memory_preds = memory_booster.predict(xgb.DMatrix(test.select("a", "b").to_numpy(), feature_names=["a", "b"]))
    external_auc, memory_auc = roc_auc_score(labels, external_preds), roc_auc_score(labels, memory_preds)
    assert external_auc > 0.75  # it learned the signal
    assert abs(external_auc - memory_auc) < 0.03  # same bins from the same data: about the same model


def test_the_in_memory_matrix_is_built_partition_by_partition_and_equals_the_whole_array_for_one(tmp_path):
    import xgboost as xgb

    from trainpipe.boosting import booster_params, training_matrix
    from trainpipe.outofcore import partitioned_matrix
    from trainpipe.spec import XGBoostSpec

    params = booster_params(XGBoostSpec(nthread=1), "binary", None, 0)
    many, parts = _matrices(tmp_path / "many", rows_per_partition=200)
    one, _ = _matrices(tmp_path / "one", rows_per_partition=100_000)
    assert len(many.partitions["train"]) == 5 and len(one.partitions["train"]) == 1
    whole = xgb.train(params, training_matrix(parts["train"], one.feature_types, params["max_bin"]), 20)
    single = xgb.train(params, partitioned_matrix(one.partitions["train"], one.feature_types, params["max_bin"]), 20)
    assert bytes(single.save_raw("ubj")) == bytes(whole.save_raw("ubj"))
    streamed = partitioned_matrix(many.partitions["train"], many.feature_types, params["max_bin"])
    assert (streamed.num_row(), streamed.num_col()) == (parts["train"].height, 2)
    np.testing.assert_array_equal(streamed.get_label(), parts["train"][LABEL].to_numpy())
    valid = partitioned_matrix(many.partitions["valid"], many.feature_types, params["max_bin"], ref=streamed)
    assert valid.num_row() == parts["valid"].height
