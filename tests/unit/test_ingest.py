"""tasks.ingest: finding files (file, glob, folder), reading csv/parquet/ndjson, stacking, failures naming the file."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib

import polars as pl
import pytest

from tasks.ingest import ingest_files
from trainpipe import storage
from trainpipe.errors import DataError
from trainpipe.sources import load_files, read_file, resolve_sources, sources_fingerprint
from trainpipe.spec import DataSpec

CSV = "x,name,when\n1,ann,2024-01-02\n2,NA,2024-01-03\n3,,2024-01-04\n"
NDJSON = '{"x": 5, "name": "eve"}\n{"x": 6, "name": null}\n'


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.csv").write_text(CSV)
    pl.DataFrame({"x": [3, 4], "z": [1.5, 2.5]}).write_parquet(folder / "b.parquet")
    (folder / "c.ndjson").write_text(NDJSON)
    return folder


def one_file(uri: str, data: DataSpec | None = None) -> dict:
    files = resolve_sources(data or DataSpec(uris=[uri]))
    assert len(files) == 1
    return files[0]


def test_read_csv_types_nulls_and_dates(data_dir):
    spec = DataSpec(uris=[str(data_dir / "a.csv")])
    frame = read_file(one_file(str(data_dir / "a.csv")), spec)
    assert frame.columns == ["x", "name", "when"]
    assert frame.schema["x"] == pl.Int64
    assert frame.schema["when"] == pl.Date
    assert frame.get_column("name").to_list() == ["ann", None, None]  # "NA" and "" are nulls
    assert frame.get_column("when").to_list()[0] == dt.date(2024, 1, 2)


def test_read_csv_custom_separator_and_null_values(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("x;y\n1;missing\n2;b\n")
    spec = DataSpec(uris=[str(path)], separator=";", null_values=["missing"])
    frame = read_file(one_file(str(path), spec), spec)
    assert frame.get_column("y").to_list() == [None, "b"]
    assert frame.get_column("x").to_list() == [1, 2]


def test_read_parquet(data_dir):
    spec = DataSpec(uris=[str(data_dir / "b.parquet")])
    file = one_file(str(data_dir / "b.parquet"))
    assert file["format"] == "parquet"
    frame = read_file(file, spec)
    assert frame.equals(pl.DataFrame({"x": [3, 4], "z": [1.5, 2.5]}))


def test_read_ndjson(data_dir):
    spec = DataSpec(uris=[str(data_dir / "c.ndjson")])
    file = one_file(str(data_dir / "c.ndjson"))
    assert file["format"] == "ndjson"
    frame = read_file(file, spec)
    assert frame.get_column("x").to_list() == [5, 6]
    assert frame.get_column("name").to_list() == ["eve", None]


def test_read_gzipped_csv(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    spec = DataSpec(uris=[str(path)])
    file = one_file(str(path))
    assert file["format"] == "csv"
    assert read_file(file, spec).height == 3


def test_format_in_spec_overrides_suffix(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text(NDJSON)
    spec = DataSpec(uris=[str(path)], format="ndjson")
    file = one_file(str(path), spec)
    assert file["format"] == "ndjson"
    assert read_file(file, spec).get_column("x").to_list() == [5, 6]


def test_resolve_single_file_records_size_and_content_hash(data_dir):
    path = data_dir / "a.csv"
    file = one_file(str(path))
    assert file["uri"] == str(path)
    assert file["size"] == len(CSV.encode())
    assert file["content"] == "sha256:" + hashlib.sha256(CSV.encode()).hexdigest()
    assert file["format"] == "csv"


def test_resolve_glob_matches_only_its_pattern(data_dir):
    (data_dir / "b.csv.bak").write_text("x\n1\n")
    files = resolve_sources(DataSpec(uris=[str(data_dir / "*.csv")]))
    assert [f["uri"] for f in files] == [str(data_dir / "a.csv")]
    files = resolve_sources(DataSpec(uris=[str(data_dir / "[bc].*json"), str(data_dir / "b.parq*")]))
    assert [f["uri"] for f in files] == [str(data_dir / "b.parquet"), str(data_dir / "c.ndjson")]
    assert [f["format"] for f in files] == ["parquet", "ndjson"]


def test_resolve_glob_skips_hidden_files_like_a_folder_listing(data_dir):
    (data_dir / "._a.csv").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    folder = [f["uri"] for f in resolve_sources(DataSpec(uris=[str(data_dir)]))]
    assert str(data_dir / "._a.csv") not in folder
    globbed = [f["uri"] for f in resolve_sources(DataSpec(uris=[str(data_dir / "*.csv")]))]
    assert globbed == [str(data_dir / "a.csv")]


def test_resolve_folder_finds_data_files_recursively_and_skips_markers(data_dir):
    (data_dir / "_SUCCESS").write_text("")
    (data_dir / "_temporary.csv").write_text("x\n99\n")
    (data_dir / ".hidden.csv").write_text("x\n99\n")
    (data_dir / "notes.md").write_text("# not data\n")
    nested = data_dir / "2024"
    nested.mkdir()
    (nested / "d.jsonl").write_text('{"x": 7}\n')
    files = resolve_sources(DataSpec(uris=[str(data_dir)]))
    assert [f["uri"] for f in files] == [
        str(nested / "d.jsonl"),
        str(data_dir / "a.csv"),
        str(data_dir / "b.parquet"),
        str(data_dir / "c.ndjson"),
    ]
    assert [f["format"] for f in files] == ["ndjson", "csv", "parquet", "ndjson"]


def test_resolve_file_uri(data_dir):
    spec = DataSpec(uris=[f"file://{data_dir}/a.csv"])
    files = resolve_sources(spec)
    assert [f["format"] for f in files] == ["csv"]
    assert read_file(files[0], spec).height == 3


def test_resolve_dedupes_files_named_twice(data_dir):
    files = resolve_sources(DataSpec(uris=[str(data_dir / "a.csv"), str(data_dir / "*.csv")]))
    assert [f["uri"] for f in files] == [str(data_dir / "a.csv")]


def test_resolve_missing_path_names_it(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=f"data not found: {missing}"):
        resolve_sources(DataSpec(uris=[missing]))


def test_resolve_glob_without_matches_names_it(tmp_path):
    pattern = str(tmp_path / "*.csv")
    with pytest.raises(DataError, match="no data files"):
        resolve_sources(DataSpec(uris=[pattern]))


def test_resolve_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match="no data files"):
        resolve_sources(DataSpec(uris=[str(tmp_path / "empty")]))


def test_sources_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    before = sources_fingerprint(resolve_sources(DataSpec(uris=[str(path)])))
    assert before == sources_fingerprint(resolve_sources(DataSpec(uris=[str(path)])))
    path.write_text("x\n2\n")  # same size, other bytes
    assert sources_fingerprint(resolve_sources(DataSpec(uris=[str(path)]))) != before


def test_ingest_stacks_several_formats_into_one_snapshot(data_dir, tmp_path):
    spec = DataSpec(uris=[str(data_dir / "*.csv"), str(data_dir / "b.parquet"), str(data_dir / "c.ndjson")])
    files = resolve_sources(spec)
    snapshot_uri = str(tmp_path / "out" / "snapshot.parquet")
    meta = ingest_files(files, spec, snapshot_uri)

    assert meta["rows"] == 3 + 2 + 2
    assert meta["columns"] == ["x", "name", "when", "z"]
    assert meta["dtypes"]["x"] == "Int64"
    assert meta["dtypes"]["when"] == "Date"
    assert meta["sha256"] == storage.sha256_uri(snapshot_uri)
    assert [s["uri"] for s in meta["sources"]] == [f["uri"] for f in files]

    snapshot = pl.read_parquet(snapshot_uri)
    assert snapshot.get_column("x").to_list() == [1, 2, 3, 3, 4, 5, 6]
    # columns a file lacks are nulls for its rows
    assert snapshot.get_column("z").to_list() == [None, None, None, 1.5, 2.5, None, None]
    assert snapshot.get_column("name").to_list() == ["ann", None, None, None, None, "eve", None]


def test_ingest_of_a_folder(data_dir, tmp_path):
    spec = DataSpec(uris=[str(data_dir)])
    meta = ingest_files(resolve_sources(spec), spec, str(tmp_path / "snap.parquet"))
    assert meta["rows"] == 7
    assert len(meta["sources"]) == 3


def test_ingest_header_only_file_is_an_error(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,y\n")
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match="no rows in .*a.csv"):
        ingest_files(resolve_sources(spec), spec, str(tmp_path / "snap.parquet"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.parquet", b"this is not parquet"),
        ("broken.ndjson", b"{not json\n"),
        ("broken.csv", b"a,b\n1,2\n\xff\xfe,3\n"),
    ],
)
def test_unreadable_file_gives_data_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    spec = DataSpec(uris=[str(path)])
    file = one_file(str(path))
    with pytest.raises(DataError, match=f"cannot read {path} as {file['format']}"):
        read_file(file, spec)


def test_one_unreadable_file_among_several_is_named(data_dir, tmp_path):
    (data_dir / "zz.parquet").write_bytes(b"garbage")
    spec = DataSpec(uris=[str(data_dir)])
    with pytest.raises(DataError) as error:
        ingest_files(resolve_sources(spec), spec, str(tmp_path / "snap.parquet"))
    assert str(data_dir / "zz.parquet") in str(error.value)
    assert not (tmp_path / "snap.parquet").exists()


def test_one_local_parquet_file_is_snapshotted_as_a_copy_of_its_bytes(tmp_path):
    """No decode and encode: the snapshot holds the file's bytes, and reads as the file itself reads."""
    path = tmp_path / "one.parquet"
    frame = pl.DataFrame({"x": [3, 4, 5], "name": ["a", None, "c"], "when": [dt.date(2024, 1, d) for d in (1, 2, 3)]})
    frame.write_parquet(path, compression="snappy")  # not the zstd trainpipe writes: a re-encoding would differ
    spec = DataSpec(uris=[str(path)])
    files = resolve_sources(spec)
    snapshot_uri = str(tmp_path / "out" / "snapshot.parquet")
    meta = ingest_files(files, spec, snapshot_uri)

    source = path.read_bytes()
    assert (tmp_path / "out" / "snapshot.parquet").read_bytes() == source
    assert meta["sha256"] == hashlib.sha256(source).hexdigest() and files[0]["content"] == f"sha256:{meta['sha256']}"
    assert (meta["rows"], meta["columns"]) == (3, ["x", "name", "when"])
    assert meta["dtypes"] == {"x": "Int64", "name": "String", "when": "Date"}
    assert pl.read_parquet(snapshot_uri).equals(load_files(files, spec))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["snapshot.parquet"]  # no temporary file left


def test_a_parquet_file_changed_after_its_fingerprint_is_refused_and_nothing_is_published(tmp_path):
    path = tmp_path / "one.parquet"
    pl.DataFrame({"x": [1, 2]}).write_parquet(path)
    spec = DataSpec(uris=[str(path)])
    files = resolve_sources(spec)
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(path)  # rewritten between the run's start and its ingest
    with pytest.raises(DataError, match=f"{path} changed while the run was reading it"):
        ingest_files(files, spec, str(tmp_path / "out" / "snapshot.parquet"))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("content", [b"PAR1" + bytes(range(256)) * 4, b"", "truncated"])
def test_one_unreadable_or_empty_parquet_file_is_named_and_nothing_is_published(tmp_path, content):
    path = tmp_path / "bad.parquet"
    if content == "truncated":
        pl.DataFrame({"x": list(range(1000))}).write_parquet(path)
        content = path.read_bytes()[:-100]
    path.write_bytes(content)
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=str(path)):
        ingest_files(resolve_sources(spec), spec, str(tmp_path / "out" / "snapshot.parquet"))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_empty_parquet_file_is_no_rows_and_publishes_nothing(tmp_path):
    path = tmp_path / "empty.parquet"
    pl.DataFrame({"x": []}, schema={"x": pl.Int64}).write_parquet(path)
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=f"no rows in {path}"):
        ingest_files(resolve_sources(spec), spec, str(tmp_path / "out" / "snapshot.parquet"))
    assert list((tmp_path / "out").iterdir()) == []


def test_json_array_file_is_read_as_records(tmp_path):
    path = tmp_path / "cars.json"
    path.write_text('[{"mpg": 18.0, "origin": "USA"}, {"mpg": null, "origin": "Japan"}]')
    data = DataSpec(uris=[str(path)])
    frame = load_files(resolve_sources(data), data)
    assert frame.columns == ["mpg", "origin"]
    assert frame.get_column("mpg").to_list() == [18.0, None]


def test_recorded_inputs_fall_back_to_the_recorded_uris_and_say_so_when_both_fail(tmp_path):
    """Reproduce finds a version's data again; when it cannot, the error names what was tried."""
    from trainpipe.sources import recorded_inputs

    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,2\n")
    manifest = {"spec": {"name": "m", "data": {"uris": ["relative/d.csv"]}, "target": "y"},
                "data": {"sources": [{"uri": str(data)}]}}
    spec, files = recorded_inputs(manifest, str(tmp_path / "art"), "(manifest of m:1)")
    assert spec.data.uris == [str(data)] and [f["uri"] for f in files] == [str(data)]
    data.unlink()
    with pytest.raises(DataError, match=r"m:1.*relative/d\.csv.*recorded URIs.*d\.csv"):
        recorded_inputs(manifest, str(tmp_path / "art"), "(manifest of m:1)")


@pytest.mark.parametrize("compressed", [False, True])
def test_a_row_with_too_few_fields_is_refused_naming_it(tmp_path, compressed):
    from trainpipe.spec import DataSpec

    text = "a,b,y\n1,2,3\n4,5\n7,8,9\n"
    path = tmp_path / ("short.csv.gz" if compressed else "short.csv")
    path.write_bytes(gzip.compress(text.encode()) if compressed else text.encode())
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=r"short\.csv(\.gz)?: data row 2 has 2 fields, the header 3: a row with too few"):
        load_files(resolve_sources(spec), spec)


def test_quoted_separators_and_newlines_and_blank_lines_are_not_short_rows(tmp_path):
    from trainpipe.spec import DataSpec

    path = tmp_path / "quoted.csv"
    path.write_text('a,b,y\n"x,1",2,3\n"multi\nline",5,6\n7,8,9\n\n')
    spec = DataSpec(uris=[str(path)])
    frame = load_files(resolve_sources(spec), spec)
    assert frame.get_column("a").to_list()[:3] == ["x,1", "multi\nline", "7"]  # (polars reads the blank line as nulls)


# --- real files: blank lines, \r\n, a byte-order mark, spaces around header names ----------------------------

BLANKS = {
    "blank-lines": "x,name,y\n1,ann,a\n\n2,bob,b\n\n3,cy,a\n\n\n",
    "crlf-blank-lines": "x,name,y\r\n1,ann,a\r\n\r\n2,bob,b\r\n3,cy,a\r\n\r\n",
    "bom-crlf": "\ufeffx,name,y\r\n1,ann,a\r\n2,bob,b\r\n\r\n3,cy,a\r\n",
}


@pytest.mark.parametrize("case", list(BLANKS))
@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "out-of-core"])
def test_blank_lines_crlf_and_a_bom_read_as_the_rows_alone(tmp_path, case, streaming):
    from tasks.ingest import ingest_files_streaming

    path = tmp_path / "a.csv"
    path.write_bytes(BLANKS[case].encode("utf-8"))
    spec = DataSpec(uris=[str(path)])
    ingest = ingest_files_streaming if streaming else ingest_files
    meta = ingest(resolve_sources(spec), spec, str(tmp_path / "snap.parquet"))
    frame = pl.read_parquet(tmp_path / "snap.parquet")
    assert meta["rows"] == 3 and meta["columns"] == ["x", "name", "y"]  # no "\ufeffx", no null rows
    assert frame.get_column("x").to_list() == [1, 2, 3] and frame.schema["x"] == pl.Int64
    assert frame.get_column("y").to_list() == ["a", "b", "a"]  # the last column carries no "\r"
    assert frame.null_count().row(0) == (0, 0, 0)


def test_blank_lines_in_a_file_read_from_bytes(tmp_path):
    """read_file (the remote and compressed path) parses the bytes: blank lines go there too."""
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(BLANKS["crlf-blank-lines"].encode()))
    spec = DataSpec(uris=[str(path)])
    frame = load_files(resolve_sources(spec), spec)
    assert frame.height == 3 and frame.null_count().row(0) == (0, 0, 0)


def test_a_row_of_empty_fields_is_dropped_but_a_row_with_one_value_is_kept(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,name,y\n1,ann,a\n,,\n,,b\n")
    spec = DataSpec(uris=[str(path)])
    frame = load_files(resolve_sources(spec), spec)
    assert frame.rows() == [(1, "ann", "a"), (None, None, "b")]


def test_a_line_of_spaces_is_a_row_with_too_few_fields(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,name,y\n1,ann,a\n   \n2,bob,b\n")
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=r"data row 2 has 1 fields, the header 3"):
        load_files(resolve_sources(spec), spec)


def test_spaces_around_header_names_are_a_clear_error(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x, name,y \n1,ann,a\n")
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=r"column name\(s\) ' name', 'y ' in the header have spaces around them"):
        load_files(resolve_sources(spec), spec)


def test_a_bom_does_not_hide_a_duplicate_first_name(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffx,y,x\n1,2,3\n".encode())
    spec = DataSpec(uris=[str(path)])
    with pytest.raises(DataError, match=r"duplicate column name\(s\) 'x'"):
        load_files(resolve_sources(spec), spec)
