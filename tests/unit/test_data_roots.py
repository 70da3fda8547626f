"""Allowed data roots (TRAINPIPE_DATA_ROOTS): a run started on a worker reads only under them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainpipe.errors import OutsideDataRoots
from trainpipe.sources import check_data_roots, data_roots, resolve_sources
from trainpipe.spec import DataSpec


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "allowed" / "sub" / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "secret" / "b.csv").write_text("x,y\n3,4\n")
    (tmp_path / "allowed-not").mkdir()
    (tmp_path / "allowed-not" / "c.csv").write_text("x,y\n5,6\n")
    return tmp_path


def test_no_roots_means_no_restriction(tree, monkeypatch):
    monkeypatch.delenv("TRAINPIPE_DATA_ROOTS", raising=False)
    assert data_roots() == []
    assert len(resolve_sources(DataSpec(uris=[str(tree / "secret" / "b.csv")]))) == 1


@pytest.mark.parametrize("relative, allowed", [
    ("allowed/sub/a.csv", True), ("allowed/sub", True), ("allowed/sub/*.csv", True), ("allowed", True),
    ("allowed/../secret/b.csv", False), ("secret/b.csv", False), ("allowed-not/c.csv", False), ("*/b.csv", False),
])
def test_local_paths_are_normalised_before_the_check(tree, monkeypatch, relative, allowed):
    monkeypatch.setenv("TRAINPIPE_DATA_ROOTS", f"{tree / 'allowed'}")
    for uri in (str(tree / relative), f"file://{tree / relative}"):
        if allowed:
            check_data_roots(uri, data_roots())
        else:
            with pytest.raises(OutsideDataRoots, match="outside the data roots"):
                check_data_roots(uri, data_roots())


def test_a_symlink_inside_a_root_that_points_out_of_it_is_refused(tree, monkeypatch):
    os.symlink(tree / "secret" / "b.csv", tree / "allowed" / "link.csv")
    monkeypatch.setenv("TRAINPIPE_DATA_ROOTS", str(tree / "allowed"))
    with pytest.raises(OutsideDataRoots, match="link.csv|b.csv"):
        resolve_sources(DataSpec(uris=[str(tree / "allowed" / "link.csv")]))


def test_object_store_prefixes(monkeypatch):
    monkeypatch.setenv("TRAINPIPE_DATA_ROOTS", "s3://landing/team-a/, /srv/data")
    roots = data_roots()
    check_data_roots("s3://landing/team-a/2026/batch.parquet", roots)
    check_data_roots("s3://landing/team-a/*.csv", roots)
    for bad in ("s3://landing/team-b/x.csv", "s3://landing/team-a-old/x.csv", "s3://other/team-a/x.csv"):
        with pytest.raises(OutsideDataRoots):
            check_data_roots(bad, roots)
    with pytest.raises(OutsideDataRoots, match=r"'\.\.'"):
        check_data_roots("s3://landing/team-a/../team-b/x.csv", roots)
