"""Secrets never written down: a database password and S3 keys planted where trainpipe accepts them (the
environment, a storage URL referenced by env:NAME) appear in no output file, log line, flow-run parameter or
artifact on the Prefect server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import optuna
import pytest

from flows.train import train_flow
from trainpipe.errors import SpecError
from trainpipe.spec import parse_spec

PASSWORD = f"pw-{uuid.uuid4().hex}"  # PostgreSQL here trusts 127.0.0.1: any password connects
S3_SECRET = f"s3-{uuid.uuid4().hex}"


def spec_fields(data: Path, artifacts: Path, storage: str) -> dict:
    return {"name": "penguins", "data": {"uris": [str(data)]}, "target": "species", "artifacts": str(artifacts),
            "xgboost": {"num_boost_round": 40, "early_stopping_rounds": 10},
            "tuning": {"trials": 3, "storage": storage, "study_name": f"secret-test-{uuid.uuid4().hex[:10]}"}}


def test_a_password_in_the_storage_url_is_refused_with_how_to_pass_it(tmp_path: Path, penguins_csv: Path):
    fields = spec_fields(penguins_csv, tmp_path, f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test")
    with pytest.raises(SpecError) as raised:
        parse_spec(fields)
    assert "env:" in str(raised.value) and PASSWORD not in str(raised.value)


async def server_texts() -> list[str]:
    """Every flow run's parameters, every artifact and every log line the Prefect server holds."""
    from prefect.client.orchestration import get_client

    texts = []
    async with get_client() as client:
        for run in await client.read_flow_runs(limit=200):
            texts.append(repr(run.parameters))
        texts += [repr(a.data) + repr(a.description) for a in await client.read_artifacts(limit=200)]
        texts += [log.message for log in await client.read_logs(limit=200)]
    return texts


def test_planted_secrets_appear_nowhere(tmp_path: Path, penguins_csv: Path, monkeypatch, caplog):
    monkeypatch.setenv("TRAINPIPE_TEST_OPTUNA_URL", f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "planted-key-id")
    fields = spec_fields(penguins_csv, tmp_path / "art", "env:TRAINPIPE_TEST_OPTUNA_URL")
    caplog.set_level(logging.DEBUG)
    result = train_flow(parse_spec(fields))
    assert result["version"] == 1 and result["tuning"]
    # the study really is in PostgreSQL, reached with the URL from the environment
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
    study = optuna.load_study(study_name=fields["tuning"]["study_name"], storage=url)
    assert len(study.trials) == 3
    optuna.delete_study(study_name=fields["tuning"]["study_name"], storage=url)

    files = [p for p in (tmp_path / "art").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    for secret in (PASSWORD, S3_SECRET):
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaked == [], f"{secret} written to {leaked}"
        assert secret not in caplog.text
        assert not [t for t in asyncio.run(server_texts()) if secret in t]
    manifest = next(p for p in files if p.name == "manifest.json").read_text()
    assert "env:TRAINPIPE_TEST_OPTUNA_URL" in manifest  # the reference is recorded, not the URL


def test_a_storage_url_in_a_prefect_secret_block_is_used_by_reference(tmp_path: Path, penguins_csv: Path):
    from prefect.blocks.system import Secret

    from tasks.tune.study import resolve_storage_url
    from trainpipe.errors import TuningError

    block = f"trainpipe-test-{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
    Secret(value=url).save(block, overwrite=True)
    spec = parse_spec(spec_fields(penguins_csv, tmp_path, f"secret:{block}"))
    assert spec.tuning.storage == f"secret:{block}" and PASSWORD not in spec.model_dump_json()
    resolved, described = resolve_storage_url(spec.tuning.storage)
    assert resolved == url
    assert described.startswith(f"secret:{block}") and PASSWORD not in described and "***" in described
    with pytest.raises(TuningError, match="no Prefect Secret block named 'trainpipe-test-absent'"):
        resolve_storage_url("secret:trainpipe-test-absent")
    with pytest.raises(SpecError, match="secret:NAME"):
        parse_spec(spec_fields(penguins_csv, tmp_path, "secret:Bad_Name"))
