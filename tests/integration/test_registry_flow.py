"""The gate in the training flow on the penguins data: a worse challenger stays out, a better one is
promoted, an identical re-run moves nothing, lineage and audit records, manual control, reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows.reproduce import reproduce
from flows.train import train_flow
from trainpipe import audit, registry, storage
from trainpipe.spec import parse_spec

WEAK = {"num_boost_round": 1, "max_depth": 1}
MIDDLE = {"num_boost_round": 3, "max_depth": 2}


def make_spec(data: Path, artifacts: Path, **fields):
    return parse_spec({"name": "penguins", "data": {"uris": [str(data)]}, "target": "species",
                       "artifacts": str(artifacts), **fields})


@pytest.fixture(scope="module")
def history(tmp_path_factory, penguins_csv: Path) -> dict:
    """weak (v1, beats the baseline) -> strong (v2, beats v1) -> middle (v3, worse than v2) -> strong again."""
    artifacts = tmp_path_factory.mktemp("gate") / "art"
    trigger = {"event": "trainpipe.data.arrived", "id": "ev-123", "dataset": str(penguins_csv)}
    runs = {
        "weak": train_flow(make_spec(penguins_csv, artifacts, xgboost=WEAK)),
        "strong": train_flow(make_spec(penguins_csv, artifacts), trigger=trigger),
        "middle": train_flow(make_spec(penguins_csv, artifacts, xgboost=MIDDLE)),
        "strong_again": train_flow(make_spec(penguins_csv, artifacts)),
    }
    return {"artifacts": str(artifacts), "runs": runs, "trigger": trigger}


def test_first_version_must_beat_the_baseline_and_does(history):
    weak = history["runs"]["weak"]
    assert weak["version"] == 1 and weak["promoted"]
    evidence = weak["promotion"]["evidence"]
    assert weak["promotion"]["against"] == "baseline" and evidence["metric"] == "mlogloss"
    assert evidence["challenger"] == pytest.approx(weak["metrics"]["mlogloss"])
    assert evidence["reference"] == pytest.approx(weak["baseline_metrics"]["mlogloss"])
    assert evidence["ci_low"] > 0


def test_better_challenger_is_promoted_and_worse_one_is_not(history):
    artifacts, runs = history["artifacts"], history["runs"]
    strong, middle = runs["strong"], runs["middle"]
    assert strong["version"] == 2 and strong["promoted"]
    assert strong["promotion"]["against"] == "champion" and strong["promotion"]["champion_version"] == 1
    # the champion was re-scored on the challenger's holdout through its own transform: same score as its own
    # evaluation, because both runs split the same data with the same seed
    assert strong["promotion"]["evidence"]["reference"] == pytest.approx(runs["weak"]["metrics"]["mlogloss"])
    assert middle["version"] == 3 and not middle["promoted"]
    assert middle["promotion"]["reason"].startswith("not promoted")
    assert middle["promotion"]["evidence"]["improvement"] < 0
    assert registry.champion(artifacts, "penguins") == 2
    manifest = registry.read_manifest(artifacts, "penguins", 3)
    assert manifest["promotion"]["promote"] is False and manifest["promotion"]["champion_version"] == 2
    assert set(manifest["promotion"]["champion_metrics"]) == {"mlogloss", "accuracy"}


def test_identical_rerun_reuses_the_version_and_moves_nothing(history):
    again = history["runs"]["strong_again"]
    assert again["reused"] and again["version"] == 2 and not again["promoted"]
    assert "identical to the stored v2" in again["promotion"]["reason"]
    moves = audit.alias_moves(audit.read_log(history["artifacts"], "penguins"))
    assert [(m["from_version"], m["version"]) for m in moves] == [(None, 1), (1, 2)]


def test_audit_log_and_lineage(history):
    artifacts = history["artifacts"]
    records = audit.read_log(artifacts, "penguins")
    assert [(r["event"], r["version"]) for r in records] == [
        ("version_published", 1), ("gate_verdict", 1), ("alias_moved", 1),
        ("version_published", 2), ("gate_verdict", 2), ("alias_moved", 2),
        ("version_published", 3), ("gate_verdict", 3)]
    assert registry.verify_registry(artifacts, "penguins") == []
    manifest = registry.read_manifest(artifacts, "penguins", 2)
    assert manifest["lineage"]["trigger"] == history["trigger"]
    assert records[3]["trigger"] == history["trigger"] and records[5]["trigger"] == history["trigger"]
    deps = manifest["lineage"]["dependencies"]
    constraints = Path(__file__).resolve().parents[2] / "constraints.txt"
    assert deps["sha256"] == storage.sha256_bytes(constraints.read_bytes())
    assert "prefect==3.9.1" in deps["pins"]


def test_card_drift_and_files(history):
    folder = Path(history["runs"]["middle"]["uri"])
    manifest = json.loads((folder / "manifest.json").read_text())
    drift = manifest["drift"]
    assert drift["champion_version"] == 2
    assert all(c["psi"] == pytest.approx(0, abs=1e-9) for c in drift["columns"].values())  # same data
    assert {"data_profile.json", "model_card.html", "model_card.md"} <= {p.name for p in folder.iterdir()}
    assert manifest["files"]["data_profile.json"] == storage.sha256_bytes((folder / "data_profile.json").read_bytes())
    page = (folder / "model_card.html").read_text()
    assert page.count("<svg") == 3 and "ROC" in page and "Calibration" in page
    card = (folder / "model_card.md").read_text()
    assert "not promoted" in card and "champion v2" in card and "## Data drift" in card


def test_drift_shows_a_shifted_column(tmp_path: Path, penguins_csv: Path):
    artifacts = tmp_path / "art"
    train_flow(make_spec(penguins_csv, artifacts, validation={"mode": "warn"}))
    shifted = pl.read_csv(penguins_csv, null_values="NA").with_columns(pl.col("body_mass_g") * 1.3)
    data = tmp_path / "shifted.csv"
    shifted.write_csv(data)
    result = train_flow(make_spec(data, artifacts, validation={"mode": "warn"}))

    assert result["drift_large_shifts"] == ["body_mass_g"]
    drift = registry.read_manifest(str(artifacts), "penguins", result["version"])["drift"]
    assert drift["columns"]["body_mass_g"]["shift"] == "large"
    assert drift["columns"]["bill_length_mm"]["shift"] == "stable"


def test_reproduce_gives_a_byte_identical_model(history):
    report = reproduce(history["artifacts"], "penguins:2")
    assert report["byte_identical"] and report["reproduced"]
    assert report["engine"] == "local" and report["check"] == "byte-identical"
    assert report["model_sha256_now"] == registry.read_manifest(history["artifacts"], "penguins", 2)["model_sha256"]


def test_manual_promote_and_rollback_record_who_and_why(history, monkeypatch, capsys):
    from cli.main import main

    artifacts = history["artifacts"]
    monkeypatch.setenv("TRAINPIPE_USER", "alice")

    def cli(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--artifacts", artifacts])
        out, err = capsys.readouterr()
        return code, out, err

    promoted = cli("models", "promote", "penguins:3", "--reason", "ticket 42: v3 is smaller")
    rolled = cli("models", "rollback", "penguins", "--reason", "v3 misbehaved", "--json")
    shown = cli("models", "show", "penguins:3")
    no_reason = cli("models", "promote", "penguins:3")

    assert promoted[0] == 0 and "champion v2 -> v3" in promoted[1], promoted
    assert rolled[0] == 0 and json.loads(rolled[1])["version"] == 2
    assert registry.champion(artifacts, "penguins") == 2
    moves = registry.alias_history(artifacts, "penguins", "champion")[-2:]
    assert [(m["kind"], m["by"], m["reason"]) for m in moves] == [
        ("manual_promote", "alice", "ticket 42: v3 is smaller"), ("rollback", "alice", "v3 misbehaved")]
    assert "champion: v2" in shown[1] and "not promoted" in shown[1] and "v3 misbehaved" in shown[1]
    assert no_reason[0] == 2 and "--reason" in no_reason[2]
    assert registry.verify_registry(artifacts, "penguins") == []


def test_attachments_are_copied_into_the_version_and_hashed(history, tmp_path: Path):
    """The hook the tuning stage uses: train's result may name files to keep with the version."""
    from tasks.store import store_version
    from trainpipe.errors import RegistryError

    source = Path(history["runs"]["strong"]["uri"])
    manifest = json.loads((source / "manifest.json").read_text())
    evaluation = {**json.loads((source / "metrics.json").read_text()), "importance": []}
    board = tmp_path / "leaderboard.json"
    board.write_text('[{"trial": 0, "value": 0.05}]\n')
    inputs = [str(source / f) for f in ("model.ubj", "transform.json", "contract.json", "validation_report.json")]

    stored = store_version(str(tmp_path / "art"), "tuned", manifest, evaluation, *inputs,
                                    attachments={"leaderboard.json": str(board)})

    folder = Path(stored["uri"])
    saved = json.loads((folder / "manifest.json").read_text())
    assert (folder / "leaderboard.json").read_bytes() == board.read_bytes()
    assert saved["attachments"] == ["leaderboard.json"]
    assert saved["files"]["leaderboard.json"] == storage.sha256_bytes(board.read_bytes())
    with pytest.raises(RegistryError, match="attachment name 'model.ubj'"):
        store_version(str(tmp_path / "art2"), "tuned", manifest, evaluation, *inputs,
                               attachments={"model.ubj": str(board)})
    assert registry.list_versions(str(tmp_path / "art2"), "tuned") == []


def test_a_version_committed_by_a_run_that_died_before_its_records_is_judged_by_the_next_run(
        tmp_path: Path, penguins_csv: Path, monkeypatch):
    """A run killed between `_COMMITTED` and its audit records leaves a version that is not 'reused' until it
    has its verdict: the next run appends the missing publication record, gates it and records the verdict."""
    artifacts = tmp_path / "art"
    spec = make_spec(penguins_csv, artifacts)
    real = registry.record_publication

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed after the commit")  # what a SIGKILL leaves behind, short of the kill

    monkeypatch.setattr(registry, "record_publication", die)
    with pytest.raises(BaseException):
        train_flow(spec)
    monkeypatch.setattr(registry, "record_publication", real)
    assert registry.list_versions(str(artifacts), "penguins") == [1]
    assert registry.verify_registry(str(artifacts), "penguins")  # committed, never logged

    repaired = train_flow(spec)
    again = train_flow(spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"margin": 0.5})}))

    assert repaired["version"] == 1 and not repaired["reused"] and repaired["promoted"]
    assert registry.verify_registry(str(artifacts), "penguins") == []
    events = [(r["event"], r.get("version")) for r in audit.read_log(str(artifacts), "penguins")]
    assert events == [("version_published", 1), ("gate_verdict", 1), ("alias_moved", 1)]
    # the version now has its verdict: an identical re-run (another promotion margin changes no stage
    # before the gate) stops before evaluation, with every stage up to training cached
    assert again["reused"] and again["version"] == 1 and not again["promoted"]
    assert all(again["stages"][s]["cached"] for s in ("ingest", "validate", "split", "features", "train"))
    assert "evaluate" not in again["stages"]
    assert len(audit.read_log(str(artifacts), "penguins")) == 3
