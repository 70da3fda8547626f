"""The training flow end to end on the bundled penguins data: caching, determinism, contract failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.train import train_flow
from trainpipe import registry, storage
from trainpipe.errors import ContractViolation
from trainpipe.spec import parse_spec


def make_spec(data: str, artifacts: Path, **fields):
    return parse_spec({"name": "penguins", "data": {"uris": [data]}, "target": "species",
                       "artifacts": str(artifacts), **fields})


def stage_folders(artifacts: Path, stage: str) -> set[str]:
    folder = artifacts / "cache" / stage
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.fixture
def split_data(tmp_path: Path, penguins_csv: Path) -> Path:
    """The penguins rows in two files of one folder."""
    frame = pl.read_csv(penguins_csv, null_values="NA")
    folder = tmp_path / "data"
    folder.mkdir()
    frame.head(200).write_csv(folder / "part-1.csv")
    frame.slice(200).write_csv(folder / "part-2.csv")
    return folder


def test_rerun_hits_cache_and_reuses_version(tmp_path: Path, penguins_csv: Path):
    spec = make_spec(str(penguins_csv), tmp_path / "art")
    first = train_flow(spec)
    second = train_flow(spec)

    assert first["version"] == 1 and not first["reused"]
    assert not any(s["cached"] for s in first["stages"].values())
    for stage in ("ingest", "validate", "split", "features", "train"):
        assert second["stages"][stage]["cached"], stage
    assert second["version"] == 1 and second["reused"]
    assert second["metrics"] == first["metrics"]
    assert registry.list_versions(str(tmp_path / "art"), "penguins") == [1]


def test_changed_data_file_reruns_from_ingest(tmp_path: Path, split_data: Path):
    artifacts = tmp_path / "art"
    spec = make_spec(str(split_data), artifacts)
    first = train_flow(spec)

    changed = pl.read_csv(split_data / "part-2.csv").with_columns(pl.col("body_mass_g") + 1)
    changed.write_csv(split_data / "part-2.csv")
    second = train_flow(spec)

    assert second["data_fingerprint"] != first["data_fingerprint"]
    for stage in ("ingest", "validate", "split", "features", "train"):
        assert not second["stages"][stage]["cached"], stage
    assert len(stage_folders(artifacts, "ingest")) == 2
    assert second["version"] == 2 and not second["reused"]


def test_changed_model_parameter_reruns_only_training(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    train_flow(make_spec(str(penguins_csv), artifacts))
    result = train_flow(make_spec(str(penguins_csv), artifacts, xgboost={"max_depth": 3}))

    for stage in ("ingest", "validate", "split", "features"):
        assert result["stages"][stage]["cached"], stage
    assert not result["stages"]["train"]["cached"]
    assert len(stage_folders(artifacts, "train")) == 2
    manifest = registry.read_manifest(str(artifacts), "penguins", result["version"])
    assert manifest["training"]["params"]["max_depth"] == 3


def test_same_spec_and_data_give_byte_identical_models(tmp_path: Path, penguins_csv: Path):
    results = [train_flow(make_spec(str(penguins_csv), tmp_path / f"art{i}")) for i in (1, 2)]
    models = [Path(r["uri"], "model.ubj").read_bytes() for r in results]

    assert models[0] == models[1]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert not results[1]["stages"]["train"]["cached"]  # a separate store: really trained twice


def test_contract_violation_fails_before_training_and_stores_nothing(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    train_flow(make_spec(str(penguins_csv), artifacts))
    trained_before = stage_folders(artifacts, "train")

    bad = pl.read_csv(penguins_csv, null_values="NA").with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("Atlantis")).otherwise(pl.col("island")).alias("island"),
        pl.when(pl.int_range(pl.len()) == 5).then(99999.0).otherwise(pl.col("body_mass_g")).alias("body_mass_g"),
    )
    bad_path = tmp_path / "bad.csv"
    bad.write_csv(bad_path)

    with pytest.raises(ContractViolation) as raised:
        train_flow(make_spec(str(bad_path), artifacts))

    message = str(raised.value)
    assert "island" in message and "body_mass_g" in message
    report_files = list((artifacts / "runs").glob("*/validation_report.json"))
    assert len(report_files) == 1
    report = json.loads(report_files[0].read_text())
    by_column = {v["column"]: v for v in report["violations"]}
    assert by_column["island"]["failing_rows"] == 3
    assert "Atlantis" in by_column["island"]["examples"]
    assert by_column["body_mass_g"]["failing_rows"] == 1
    assert registry.list_versions(str(artifacts), "penguins") == [1]
    assert stage_folders(artifacts, "train") == trained_before


def test_null_targets_dropped_and_counted(tmp_path: Path, penguins_csv: Path):
    spec = parse_spec({"name": "sex", "data": {"uris": [str(penguins_csv)]}, "target": "sex",
                       "artifacts": str(tmp_path / "art")})
    result = train_flow(spec)

    nulls = pl.read_csv(penguins_csv, null_values="NA").get_column("sex").null_count()
    assert nulls > 0
    assert result["dropped_null_target"] == nulls
    assert result["task"] == "binary" and result["task_inferred"]
    assert sum(result["rows"].values()) == 344 - nulls
    assert result["metrics"]["auc"] > result["baseline_metrics"]["auc"]
    manifest = registry.read_manifest(str(tmp_path / "art"), "sex", 1)
    assert manifest["data"]["dropped_null_target"] == nulls
    assert manifest["prefect"]["flow_run_id"]
    assert manifest["files"]["model.ubj"] == storage.sha256_bytes(Path(result["uri"], "model.ubj").read_bytes())


def test_cleaned_artifact_store_is_rebuilt_not_served_stale(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    spec = make_spec(str(penguins_csv), artifacts)
    train_flow(spec)
    shutil.rmtree(artifacts)

    result = train_flow(spec)

    assert not result["stages"]["ingest"]["cached"]
    assert Path(result["uri"], "model.ubj").exists()
    assert result["version"] == 1


def test_run_leaves_report_metrics_and_summary_artifacts(tmp_path: Path, penguins_csv: Path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = train_flow(make_spec(str(penguins_csv), tmp_path / "art"), return_state=True)
    flow_run_id = state.state_details.flow_run_id

    async def artifacts_of_run():
        async with get_client() as client:
            return await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    import asyncio

    found = {a.key: a for a in asyncio.run(artifacts_of_run())}
    assert {"validation-report", "metrics", "model-summary"} <= set(found)
    assert found["metrics"].type == "table" and "mlogloss" in str(found["metrics"].data)
    assert "penguins v1" in found["model-summary"].data


def test_warn_mode_publishes_and_reports_violations(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    train_flow(make_spec(str(penguins_csv), artifacts))
    shifted = pl.read_csv(penguins_csv, null_values="NA").with_columns(
        pl.col("island").replace("Torgersen", "Atlantis"))
    shifted_path = tmp_path / "shifted.csv"
    shifted.write_csv(shifted_path)

    result = train_flow(make_spec(str(shifted_path), artifacts, validation={"mode": "warn"}))

    assert result["contract_violations"] == 1
    assert result["version"] == 2
    report = json.loads(Path(result["uri"], "validation_report.json").read_text())
    assert report["violations"][0]["column"] == "island"
    assert report["violations"][0]["examples"] == ["Atlantis"]
    assert report["source"] == str(shifted_path)


def test_refit_uses_validation_rows_and_is_recorded(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    refit = train_flow(make_spec(str(penguins_csv), artifacts))
    plain = train_flow(make_spec(str(penguins_csv), artifacts, xgboost={"refit": False}))

    manifests = [registry.read_manifest(str(artifacts), "penguins", r["version"]) for r in (refit, plain)]
    assert [m["training"]["refit_on_train_and_valid"] for m in manifests] == [True, False]
    assert manifests[0]["model_sha256"] != manifests[1]["model_sha256"]
    assert plain["stages"]["features"]["cached"] and not plain["stages"]["train"]["cached"]


def test_complete_stage_folders_are_reused_without_prefect_records(tmp_path: Path, penguins_csv: Path):
    """Another worker, or a fresh Prefect home, sharing the artifact store reuses finished stages."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    artifacts = tmp_path / "art"
    spec = make_spec(str(penguins_csv), artifacts)
    first = train_flow(spec)
    records = list(Path(PREFECT_LOCAL_STORAGE_PATH.value()).glob("trainpipe-*"))
    assert records  # Prefect's cache records exist ...
    for record in records:
        record.unlink()  # ... and are gone before the second run

    second = train_flow(spec)

    for stage in ("ingest", "validate", "split", "features", "train"):
        assert second["stages"][stage]["cached"], stage
    assert second["reused"] and second["version"] == first["version"]


def test_out_of_core_run_matches_the_in_memory_run(tmp_path: Path, split_data: Path):
    """compute.external_memory on streams every data stage and trains on external memory: same rows, contract
    and metrics as in memory, on CSV inputs in two files."""
    rounds = {"num_boost_round": 30}  # external memory pays per round and page: keep the test short
    memory = train_flow(make_spec(str(split_data), tmp_path / "art-memory", compute={"external_memory": "off"},
                                  xgboost=rounds))
    streamed = train_flow(make_spec(str(split_data), tmp_path / "art-ooc", compute={"external_memory": "on"},
                                    xgboost=rounds))
    assert memory["memory"]["out_of_core"] is False
    assert streamed["memory"]["out_of_core"] is True
    assert streamed["rows"] == memory["rows"]
    assert streamed["dropped_null_target"] == memory["dropped_null_target"]
    assert streamed["task"] == memory["task"] == "multiclass"
    for name, value in memory["metrics"].items():
        assert streamed["metrics"][name] == pytest.approx(value, abs=0.02), name
    contracts = [storage.read_json(str(next((tmp_path / art / "cache" / "validate").glob("*/contract.json"))))
                 for art in ("art-memory", "art-ooc")]
    assert contracts[0]["columns"] == contracts[1]["columns"]
    fit = json.loads(next((tmp_path / "art-ooc" / "cache" / "train").glob("*/_SUCCESS")).read_text())
    assert fit["external_memory"]["partitions_read"] > 0
