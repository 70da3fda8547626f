"""Data and artifact store on S3, through s3fs, against moto's S3 server over HTTP."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from moto_s3 import moto_s3

from flows.train import train_flow
from tasks.predict import predict
from trainpipe import registry, storage
from trainpipe.spec import parse_spec

BUCKET = "trainpipe-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    import s3fs

    with moto_s3(BUCKET) as endpoint:
        yield s3fs.S3FileSystem(endpoint_url=endpoint)


def test_train_and_predict_with_s3_data_and_store(s3_endpoint, penguins_csv: Path, tmp_path: Path):
    fs = s3_endpoint
    frame = pl.read_csv(penguins_csv, null_values="NA")
    for index, part in enumerate((frame.head(150), frame.slice(150))):
        fs.pipe_file(f"{BUCKET}/raw/penguins-{index}.csv", part.write_csv().encode())
    artifacts = f"s3://{BUCKET}/store"
    spec = parse_spec({"name": "penguins-s3", "data": {"uris": [f"s3://{BUCKET}/raw/"]}, "target": "species",
                       "artifacts": artifacts})

    first = train_flow(spec)
    second = train_flow(spec)

    assert first["uri"] == f"{artifacts}/models/penguins-s3/versions/1"
    assert fs.exists(f"{BUCKET}/store/models/penguins-s3/versions/1/_COMMITTED")
    manifest = registry.read_manifest(artifacts, "penguins-s3", 1)
    assert [s["uri"] for s in manifest["data"]["sources"]] == [
        f"s3://{BUCKET}/raw/penguins-0.csv", f"s3://{BUCKET}/raw/penguins-1.csv"]
    assert all(s["content"].startswith("etag:") for s in manifest["data"]["sources"])
    assert sum(first["rows"].values()) == frame.height
    assert second["reused"] and second["stages"]["train"]["cached"]
    # the gate, champion move and audit trail on S3: promoted once (against the baseline), never twice
    assert first["promoted"] and not second["promoted"]
    assert registry.champion(artifacts, "penguins-s3") == 1
    assert registry.verify_registry(artifacts, "penguins-s3") == []
    assert fs.exists(f"{BUCKET}/store/models/penguins-s3/versions/1/model_card.html")

    fs.pipe_file(f"{BUCKET}/score/new.ndjson", frame.head(10).drop("species").write_ndjson().encode())
    out = f"s3://{BUCKET}/score/predictions.parquet"
    result = predict(artifacts, "penguins-s3:1", f"s3://{BUCKET}/score/new.ndjson", out)
    scored = storage.read_parquet(out)
    assert result["rows"] == 10
    assert set(scored.get_column("prediction").to_list()) <= {"Adelie", "Chinstrap", "Gentoo"}


def test_create_only_on_s3_refuses_second_writer(s3_endpoint):
    uri = f"s3://{BUCKET}/claims/one"
    assert storage.create_only(uri, b"first")
    assert not storage.create_only(uri, b"second")
    assert storage.read_bytes(uri) == b"first"
