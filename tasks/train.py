"""Train: an XGBoost `hist` booster with early stopping on the validation part."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Optional

from tasks.common import cached_stage, current_stage_dir, finish_stage
from trainpipe import storage
from trainpipe.boosting import booster_params, model_bytes
from trainpipe.outofcore import (cache_bytes, cache_folder, external_matrix, part_partitions, partitioned_matrix,
                                 use_external_memory)
from trainpipe.results import FittedModel, Matrices, Tuned
from trainpipe.spec import ComputeSpec, TaskType, XGBoostSpec

if TYPE_CHECKING:  # xgboost (and the scikit-learn it pulls in) loads only where a model is used
    import xgboost as xgb


def fit_booster(
    dtrain: xgb.DMatrix | xgb.QuantileDMatrix,
    dvalid: xgb.DMatrix | xgb.QuantileDMatrix,
    params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
) -> tuple[xgb.Booster, dict[str, Any]]:
    """Fit with early stopping; the booster returned is cut at its best iteration."""
    import xgboost as xgb

    history: dict[str, Any] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
    )
    best = getattr(booster, "best_iteration", None)
    rounds = booster.num_boosted_rounds()
    if best is not None and best + 1 < rounds:
        booster = booster[: best + 1]
    curve = history["valid"][params["eval_metric"]]
    info = {
        "rounds_trained": rounds,
        "best_iteration": int(best) if best is not None else rounds - 1,
        "best_validation_score": float(min(curve) if params["eval_metric"] != "auc" else max(curve)),
        "validation_metric": params["eval_metric"],
    }
    return booster, info


def refit_booster(
    train_uris: list[str], valid_uris: list[str], feature_types: list[str], params: dict[str, Any], rounds: int
) -> xgb.Booster:
    """Refit on training + validation rows for the number of rounds early stopping chose."""
    import xgboost as xgb

    stacked = partitioned_matrix(train_uris + valid_uris, feature_types, params["max_bin"])
    return xgb.train(params, stacked, num_boost_round=rounds, verbose_eval=False)


def rounds_from_tuning(tuning: Optional[Tuned]) -> Optional[int]:
    """The rounds early stopping chose in the best tuning trial, when that trial trained on every training row of
    these matrices with these parameters and was not cut short by the tuning budget; else None.

    Early stopping again on the same data would only repeat that fit (with a refit, the train stage's first of two
    fits): the train stage then trains once, for that many rounds.
    """
    if tuning is None:
        return None
    summary = tuning.summary
    sampled = summary.get("trial_rows") or {}
    best = summary.get("best_iteration")
    if best is None or summary.get("best_cut_by_timeout", True) or sampled.get("used") != sampled.get("of"):
        return None
    return int(best) + 1


def fit_external(matrices: Matrices, params: dict[str, Any], xgboost: XGBoostSpec) -> tuple[xgb.Booster, dict[str, Any]]:
    """Fit with early stopping from `ExtMemQuantileDMatrix`es fed one partition at a time (validation shares the
    training bins); the refit, when asked, streams training + validation partitions the same way."""
    import xgboost as xgb

    types, max_bin = matrices.feature_types, params["max_bin"]
    train_uris, valid_uris = part_partitions(matrices, "train"), part_partitions(matrices, "valid")
    on_host = params.get("device") == "cuda"  # a GPU caches pages in host memory; the CPU on local disk
    with cache_folder() as cache:
        dtrain, train_it = external_matrix(train_uris, types, max_bin, os.path.join(cache, "train"), on_host=on_host)
        dvalid, valid_it = external_matrix(valid_uris, types, max_bin, os.path.join(cache, "valid"), ref=dtrain,
                                           on_host=on_host)
        booster, info = fit_booster(dtrain, dvalid, params, xgboost.num_boost_round, xgboost.early_stopping_rounds)
        info["external_memory"] = {
            "train_partitions": len(train_uris), "valid_partitions": len(valid_uris),
            "partitions_read": train_it.batches + valid_it.batches, "cache_bytes": cache_bytes(cache),
        }
        del dtrain, dvalid
        info["refit_on_train_and_valid"] = bool(xgboost.refit)
        if xgboost.refit:
            stacked, _ = external_matrix(train_uris + valid_uris, types, max_bin, os.path.join(cache, "refit"),
                                         on_host=on_host)
            booster = xgb.train(params, stacked, num_boost_round=info["best_iteration"] + 1, verbose_eval=False)
            del stacked
    return booster, info


@cached_stage("train", FittedModel)
def train_task(
    matrices: Matrices,
    task_type: TaskType,
    n_classes: Optional[int],
    xgboost: XGBoostSpec,
    seed: int,
    artifacts: str,
    tuning: Optional[Tuned] = None,
    compute: Optional[ComputeSpec] = None,
    external_memory: str = "off",
) -> FittedModel:
    """`tuning` (the tuning subflow's result, keyed by its fingerprint) is recorded with the model;
    `compute.engine` dask trains over the Dask cluster on the matrices' partitions; `external_memory`
    (compute.external_memory: auto, on, off) streams the partitions through XGBoost's external memory, on one
    machine or on each Dask worker."""
    started = time.perf_counter()
    folder = current_stage_dir("train")
    params = booster_params(xgboost, task_type, n_classes, seed)
    types = matrices.feature_types
    rows = matrices.rows.get("train", 0) + matrices.rows.get("valid", 0)
    if compute is not None and compute.engine == "dask":
        from trainpipe.cluster import fit_on_cluster, scheduler_address

        # out of core on the cluster as on one machine: the memory plan, else compute.external_memory against
        # the workers' memory limits
        booster, info = fit_on_cluster(scheduler_address(compute), matrices.partitions, types, params,
                                       xgboost.num_boost_round, xgboost.early_stopping_rounds, bool(xgboost.refit),
                                       external_memory=external_memory, out_of_core=matrices.out_of_core, rows=rows)
        info["refit_on_train_and_valid"] = bool(xgboost.refit)
        return _store_model(folder, booster, params, info, tuning, started)
    # a run whose data stages went out of core (decided before ingest) trains out of core too
    if matrices.out_of_core or use_external_memory(external_memory, rows, len(types)):
        booster, info = fit_external(matrices, params, xgboost)
        return _store_model(folder, booster, params, info, tuning, started)
    # in memory, built one partition at a time: the matrix's bins and one partition, never the whole part as a
    # frame and a float32 copy beside them
    train_uris, valid_uris = part_partitions(matrices, "train"), part_partitions(matrices, "valid")
    tuned_rounds = rounds_from_tuning(tuning)
    if tuning is not None and tuned_rounds is not None:
        import xgboost as xgb

        info = {"rounds_trained": tuned_rounds, "best_iteration": tuned_rounds - 1,
                "best_validation_score": float(tuning.summary["best_value"]),
                "validation_metric": params["eval_metric"], "refit_on_train_and_valid": bool(xgboost.refit),
                "rounds_from_trial": tuning.summary["best_trial"]}
        parts = train_uris + valid_uris if xgboost.refit else train_uris
        booster = xgb.train(params, partitioned_matrix(parts, types, params["max_bin"]), num_boost_round=tuned_rounds,
                            verbose_eval=False)
        return _store_model(folder, booster, params, info, tuning, started)
    dtrain = partitioned_matrix(train_uris, types, params["max_bin"])
    booster, info = fit_booster(dtrain, partitioned_matrix(valid_uris, types, params["max_bin"], ref=dtrain), params,
                                xgboost.num_boost_round, xgboost.early_stopping_rounds)
    del dtrain
    info["refit_on_train_and_valid"] = bool(xgboost.refit)
    if xgboost.refit:
        booster = refit_booster(train_uris, valid_uris, types, params, info["best_iteration"] + 1)
    return _store_model(folder, booster, params, info, tuning, started)


def _store_model(folder: str, booster: xgb.Booster, params: dict[str, Any], info: dict[str, Any],
                 tuning: Optional[Tuned], started: float) -> FittedModel:
    """Store the booster in XGBoost's own UBJSON format and finish the stage folder."""
    data = model_bytes(booster)
    model_uri = storage.join(folder, "model.ubj")
    storage.write_bytes(model_uri, data)
    meta = {"model_uri": model_uri, "model_sha256": storage.sha256_bytes(data), "params": params, **info}
    if tuning:
        meta.update(tuning=tuning.summary, attachments=tuning.attachments)
    return finish_stage(folder, FittedModel, meta, started, content=[meta["model_sha256"]])
