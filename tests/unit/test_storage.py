"""trainpipe.storage: atomic writes, create-only writes, URI joins, JSON and Parquet round trips."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from trainpipe import storage


def test_write_bytes_creates_folders_and_returns_sha256(tmp_path):
    uri = str(tmp_path / "a" / "b" / "obj.bin")
    digest = storage.write_bytes(uri, b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert storage.read_bytes(uri) == b"hello"
    assert storage.sha256_uri(uri) == digest


def test_write_bytes_replaces_and_leaves_no_temporary_files(tmp_path):
    uri = str(tmp_path / "obj.bin")
    storage.write_bytes(uri, b"old")
    storage.write_bytes(uri, b"new contents")
    assert storage.read_bytes(uri) == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.bin"]


def test_write_bytes_failure_before_publish_keeps_the_old_object(tmp_path, monkeypatch):
    uri = str(tmp_path / "obj.bin")
    storage.write_bytes(uri, b"old")

    def failing_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(OSError):
        storage.write_bytes(uri, b"half-written new contents")
    assert (tmp_path / "obj.bin").read_bytes() == b"old"


def test_create_only_writes_once(tmp_path):
    uri = str(tmp_path / "v" / "_CLAIM")
    assert storage.create_only(uri, b"first") is True
    assert storage.create_only(uri, b"second") is False
    assert storage.read_bytes(uri) == b"first"


def test_create_only_accepts_file_uris(tmp_path):
    uri = f"file://{tmp_path}/x/_CLAIM"
    assert storage.create_only(uri, b"1") is True
    assert storage.create_only(uri, b"2") is False
    assert storage.exists(uri)


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("s3://bucket/", "/models/", "m"), "s3://bucket/models/m"),
        (("/root", "a/", "b"), "/root/a/b"),
        (("file:///root/", "x"), "file:///root/x"),
        (("root",), "root"),
    ],
)
def test_join(parts, joined):
    assert storage.join(*parts) == joined


def test_dumps_json_is_canonical():
    assert storage.dumps_json({"b": 1, "a": [1, 2]}) == storage.dumps_json({"a": [1, 2], "b": 1})


def test_json_and_parquet_round_trip(tmp_path):
    storage.write_json(str(tmp_path / "m.json"), {"x": [1, 2], "y": None})
    assert storage.read_json(str(tmp_path / "m.json")) == {"x": [1, 2], "y": None}
    frame = pl.DataFrame({"a": [1, None], "b": ["x", "y"]})
    digest = storage.write_parquet(frame, str(tmp_path / "f.parquet"))
    assert digest == storage.sha256_uri(str(tmp_path / "f.parquet"))
    assert storage.read_parquet(str(tmp_path / "f.parquet")).equals(frame)


def test_local_parquet_is_written_in_place_atomically_and_hashed_from_its_bytes(tmp_path, monkeypatch):
    uri = str(tmp_path / "part" / "f.parquet")
    old = pl.DataFrame({"a": [1, 2, 3]})
    storage.write_parquet(old, uri)
    new = pl.DataFrame({"a": list(range(1000)), "b": [str(i) for i in range(1000)]})
    digest = storage.write_parquet(new, uri)
    assert digest == hashlib.sha256((tmp_path / "part" / "f.parquet").read_bytes()).hexdigest()
    assert storage.read_parquet(uri).equals(new)
    assert [p.name for p in (tmp_path / "part").iterdir()] == ["f.parquet"]  # no temporary file left

    def failing_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(OSError):
        storage.write_parquet(old, uri)
    assert storage.read_parquet(uri).equals(new)  # the published object is untouched
    assert [p.name for p in (tmp_path / "part").iterdir()] == ["f.parquet"]


def test_list_dir_and_exists(tmp_path):
    assert storage.list_dir(str(tmp_path / "missing")) == []
    storage.write_bytes(str(tmp_path / "d" / "2"), b"")
    storage.write_bytes(str(tmp_path / "d" / "10"), b"")
    assert storage.list_dir(str(tmp_path / "d")) == ["10", "2"]
    assert storage.exists(str(tmp_path / "d" / "2"))
    assert not storage.exists(str(tmp_path / "d" / "3"))


def test_normalize_root_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize_root("artifacts") == str(tmp_path / "artifacts")
    assert storage.normalize_root("s3://bucket/root/") == "s3://bucket/root"


def test_plain_scalar_makes_numpy_and_polars_values_json_safe():
    import numpy as np
    import polars as pl

    assert storage.plain_scalar(np.int64(3)) == 3 and type(storage.plain_scalar(np.int64(3))) is int
    assert storage.plain_scalar(np.float32(0.5)) == 0.5 and storage.plain_scalar(np.float64("nan")) is None
    assert storage.plain_scalar(float("inf")) is None and storage.plain_scalar("a") == "a"
    assert storage.plain_scalar(pl.Series([2.5]).max()) == 2.5
