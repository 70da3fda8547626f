"""tasks.common and trainpipe.provenance: which failures are retried, content-addressed stage folders."""

from __future__ import annotations

import pytest

from tasks.common import content_fingerprint, is_transient, stage_dir
from trainpipe import storage
from trainpipe.errors import ContractViolation, DataError, SpecError, StorageError
from trainpipe.provenance import canonical, stage_key
from trainpipe.spec import SplitSpec


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionError("reset"), True),
        (TimeoutError("slow"), True),
        (OSError("io"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("no"), False),
        (IsADirectoryError("dir"), False),
        (DataError("bad data"), False),
        (SpecError("bad spec"), False),
        (ContractViolation("broken"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def _client_error(code: str, status: int) -> BaseException:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def _translated(code: str, status: int) -> BaseException:
    """What s3fs raises for a ClientError: an OSError with the botocore error as its cause."""
    from s3fs.errors import translate_boto_error

    return translate_boto_error(_client_error(code, status))


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
        (lambda: __import__("botocore.exceptions").exceptions.ConnectionClosedError(endpoint_url="http://x"), True),
        (lambda: __import__("aiohttp").ServerDisconnectedError(), True),
        (lambda: __import__("aiohttp").ClientPayloadError("body cut short"), True),
        (lambda: _client_error("SlowDown", 503), True),
        (lambda: _translated("SlowDown", 503), True),
        (lambda: _translated("InternalError", 500), True),
        (lambda: _client_error("Throttling", 400), True),
        (lambda: _translated("AccessDenied", 403), False),
        (lambda: _translated("NoSuchKey", 404), False),
        (lambda: StorageError("s3://b/k unreachable", transient=True), True),
        (lambda: StorageError("no permission on s3://b/k"), False),
    ],
)
def test_store_errors_are_classified(make, transient):
    assert is_transient(make()) is transient


def test_store_errors_name_the_uri_and_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    denied = storage.store_error(_translated("AccessDenied", 403), "s3://locked/raw/a.csv")
    assert denied is not None and not denied.transient
    assert "s3://locked/raw/a.csv" in str(denied) and "'locked'" in str(denied) and "127.0.0.1:9" in str(denied)
    assert "permission" in str(denied)
    flaky = storage.store_error(_client_error("SlowDown", 503), "s3://b/k")
    assert flaky is not None and flaky.transient and "s3://b/k" in str(flaky)
    assert storage.store_error(_translated("NoSuchKey", 404), "s3://b/k") is None
    assert storage.store_error(ConnectionResetError("reset"), "/local/file") is None  # local errors stay as they are


def test_s3_client_retries_are_bounded_unless_configured(monkeypatch):
    monkeypatch.delenv("TRAINPIPE_STORAGE_OPTIONS", raising=False)
    options = storage.storage_options("s3://b/k")
    assert options["config_kwargs"]["retries"] == {"max_attempts": 2, "mode": "standard"}
    monkeypatch.setenv("TRAINPIPE_STORAGE_OPTIONS", '{"config_kwargs": {"retries": {"max_attempts": 9}}}')
    options = storage.storage_options("s3://b/k")
    assert options["config_kwargs"]["retries"] == {"max_attempts": 9}
    assert options["config_kwargs"]["connect_timeout"] == 5


def test_canonical_reduces_stage_outputs_to_their_fingerprint():
    value = {"snapshot": {"uri": "/tmp/a", "rows": 3, "fingerprint": "abc"}, "split": SplitSpec(test_fraction=0.3)}
    out = canonical(value)
    assert out["snapshot"] == {"fingerprint": "abc"}
    assert out["split"]["test_fraction"] == 0.3


def test_stage_key_depends_on_content_not_location():
    a = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 1})
    moved = stage_key("split", {"validated": {"uri": "/y/data.parquet", "fingerprint": "f1"}, "seed": 1})
    other = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f2"}, "seed": 1})
    other_seed = stage_key("split", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 2})
    other_stage = stage_key("features", {"validated": {"uri": "/x/data.parquet", "fingerprint": "f1"}, "seed": 1})
    assert a == moved
    assert len({a, other, other_seed, other_stage}) == 4


def test_stage_keys_follow_the_stage_code_but_not_the_cli(tmp_path, monkeypatch):
    """A change to the library, a stage or a flow re-runs the stages; a CLI-only change keeps them cached, while
    the code version a manifest records still sees it."""
    from trainpipe import provenance

    for package in provenance.SOURCE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"# {package}\n")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    provenance.source_hash.cache_clear()

    def current() -> tuple[str, str]:
        provenance.source_hash.cache_clear()
        return stage_key("split", {"seed": 1}), provenance.source_hash()

    key, code = current()
    (tmp_path / "cli" / "__init__.py").write_text("# cli, changed\n")
    cli_key, cli_code = current()
    assert cli_key == key and cli_code != code
    for package in provenance.STAGE_CODE_PACKAGES:
        (tmp_path / package / "__init__.py").write_text(f"# {package}, changed\n")
        changed_key, _ = current()
        assert changed_key != key, package
        key = changed_key
    provenance.source_hash.cache_clear()


def test_stage_dir_layout():
    folder = stage_dir("s3://bucket/art/", "ingest", {"sources": {"fingerprint": "f"}})
    assert folder == f"s3://bucket/art/cache/ingest/{stage_key('ingest', {'sources': {'fingerprint': 'f'}})}"


def test_content_fingerprint_is_order_sensitive_and_stable():
    assert content_fingerprint("a", 1) == content_fingerprint("a", 1)
    assert content_fingerprint("a", 1) != content_fingerprint(1, "a")


def test_every_stage_that_touches_the_store_retries_transient_errors_only():
    from tasks.common import TRANSIENT_RETRIES, retry_transient
    from tasks.drift import drift_task
    from tasks.evaluate import evaluate_task
    from tasks.features import features_task
    from tasks.gate import gate_task
    from tasks.ingest import fingerprint_task, ingest_task
    from tasks.plots import plots_task
    from tasks.promote import promote_task
    from tasks.split import split_task
    from tasks.store import find_stored_task, store_task
    from tasks.train import train_task
    from tasks.validate import contract_ref_task, validate_task

    stages = [fingerprint_task, ingest_task, contract_ref_task, validate_task, split_task, features_task, train_task,
              find_stored_task, evaluate_task, gate_task, drift_task, plots_task, store_task]
    for stage in stages:
        assert stage.retries == TRANSIENT_RETRIES["retries"], stage.name
        assert stage.retry_condition_fn is retry_transient, stage.name
    assert promote_task.retries == 0  # its verdict record must not be written twice


def test_a_stage_result_walks_the_parts_in_one_order_however_it_was_read():
    """A Parts/Matrices read back from a marker or Prefect's cache (JSON with sorted keys) lists its parts in the
    order of a fresh one: the features stage hashes its partitions in that order, and identical runs that met a
    cached split beside a fresh one got two fingerprints (two versions of one model under load)."""
    import json

    from trainpipe.results import Matrices, Parts

    fresh = Parts(uris={"train": "a", "valid": "b", "test": "c"}, rows={"train": 3, "valid": 1, "test": 1},
                  method="random", fingerprint="f", stage_key="k")
    read_back = Parts.model_validate(json.loads(storage.dumps_json(fresh.model_dump(mode="json"))))
    assert list(json.loads(storage.dumps_json(fresh.model_dump(mode="json")))["uris"]) == ["test", "train", "valid"]
    assert list(read_back.uris) == list(read_back.rows) == ["train", "valid", "test"]
    assert read_back == fresh
    matrices = Matrices(uris={"test": "c", "valid": "b", "train": "a"}, partitions={"valid": [], "train": []},
                        transform_uri="t", features=[], feature_types=[], dropped=[], fingerprint="f", stage_key="k")
    assert list(matrices.uris) == ["train", "valid", "test"] and list(matrices.partitions) == ["train", "valid"]
