"""trainpipe.spec: parsing, error messages naming the bad field, format and name inference."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainpipe.errors import SpecError
from trainpipe.spec import (
    TrainSpec,
    default_artifacts_uri,
    default_model_name,
    infer_format,
    load_spec,
    merge_dicts,
    parse_spec,
)

BASE = {"name": "churn", "data": {"uris": "data/churn.csv"}, "target": "churned"}


def test_parse_spec_minimal_fills_defaults_and_wraps_a_single_uri():
    spec = parse_spec(BASE)
    assert isinstance(spec, TrainSpec)
    assert spec.data.uris == ["data/churn.csv"]
    assert spec.task is None
    assert spec.seed == 42
    assert spec.validation.mode == "enforce"
    assert spec.split.test_fraction == 0.2


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": "bad name"}, "name:"),
        ({"bogus": 1}, "bogus:"),
        ({"split": {"method": "time"}}, "split:"),
        ({"xgboost": {"learning_rate": 0}}, "xgboost.learning_rate:"),
        ({"data": {"uris": []}}, "data.uris:"),
        ({"data": {"uris": "x.csv", "separator": ";;"}}, "data.separator:"),
        ({"validation": {"mode": "maybe"}}, "validation.mode:"),
        ({"features": {"derived": [{"name": "a", "expr": "x"}, {"name": "a", "expr": "y"}]}}, "features.derived:"),
    ],
)
def test_parse_spec_error_names_the_bad_field(override, field):
    with pytest.raises(SpecError) as error:
        parse_spec({**BASE, **override}, source="spec.yaml")
    message = str(error.value)
    assert "spec.yaml" in message
    assert f"  {field}" in message


def test_parse_spec_missing_required_field_is_named():
    raw = {k: v for k, v in BASE.items() if k != "target"}
    with pytest.raises(SpecError, match=r"target: Field required"):
        parse_spec(raw)


def test_parse_spec_target_also_an_id_column_is_rejected():
    with pytest.raises(SpecError, match="'churned' is also listed in id_columns"):
        parse_spec({**BASE, "id_columns": ["churned"]})


def test_parse_spec_time_split_needs_time_column_message():
    with pytest.raises(SpecError, match="needs split.time_column"):
        parse_spec({**BASE, "split": {"method": "time"}})
    spec = parse_spec({**BASE, "split": {"method": "time", "time_column": "ts"}})
    assert spec.split.time_column == "ts"


def test_load_spec_reads_yaml_and_merges_nested_overrides(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: churn\ndata:\n  uris: [a.csv, b.csv]\ntarget: churned\nxgboost:\n  max_depth: 3\n  learning_rate: 0.3\n"
    )
    spec = load_spec(str(path), overrides={"xgboost": {"max_depth": 8}, "seed": 7})
    assert spec.data.uris == ["a.csv", "b.csv"]
    assert spec.xgboost.max_depth == 8
    assert spec.xgboost.learning_rate == 0.3  # kept from the file: nested dicts merge
    assert spec.seed == 7


def test_load_spec_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found: .*nope.yaml"):
        load_spec(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml is not valid YAML"):
        load_spec(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must hold a mapping of fields, not list"):
        load_spec(str(listing))


def test_load_spec_validation_error_names_file_and_field(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: churn\ndata: {uris: a.csv}\ntarget: y\nsplit: {test_fraction: 2}\n")
    with pytest.raises(SpecError) as error:
        load_spec(str(path))
    assert str(path) in str(error.value)
    assert "split.test_fraction:" in str(error.value)


def test_merge_dicts_does_not_mutate_its_inputs():
    base = {"a": {"b": 1, "c": 2}, "d": 1}
    top = {"a": {"b": 9}}
    merged = merge_dicts(base, top)
    assert merged == {"a": {"b": 9, "c": 2}, "d": 1}
    assert base == {"a": {"b": 1, "c": 2}, "d": 1}


@pytest.mark.parametrize(
    ("uri", "fmt"),
    [
        ("a.csv", "csv"),
        ("s3://bucket/x.CSV.gz", "csv"),
        ("a.tsv", "csv"),
        ("a.parquet", "parquet"),
        ("file:///data/a.pq", "parquet"),
        ("a.jsonl", "ndjson"),
        ("a.ndjson.zst", "ndjson"),
        ("a.json", "ndjson"),
        ("a.txt?version=3", "csv"),
    ],
)
def test_infer_format_from_suffix(uri, fmt):
    assert infer_format(uri) == fmt


@pytest.mark.parametrize("uri", ["a.xlsx", "noext", "a.gz"])
def test_infer_format_unknown_suffix_names_the_uri(uri):
    with pytest.raises(SpecError, match=f"cannot infer the format of '{uri}'"):
        infer_format(uri)


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("data/penguins.csv", "penguins"),
        ("s3://bucket/sales 2024/", "sales-2024"),
        ("a/b/c.tar.gz", "c"),
        ("/", "model"),
    ],
)
def test_default_model_name(uri, name):
    assert default_model_name(uri) == name


def test_default_model_name_is_a_valid_spec_name():
    name = default_model_name("s3://b/weird@@name!!.csv")
    assert parse_spec({**BASE, "name": name}).name == name


def test_artifacts_default_comes_from_environment(monkeypatch):
    monkeypatch.setenv("TRAINPIPE_ARTIFACTS", "s3://bucket/artifacts")
    assert default_artifacts_uri() == "s3://bucket/artifacts"
    assert parse_spec(BASE).artifacts == "s3://bucket/artifacts"
    monkeypatch.delenv("TRAINPIPE_ARTIFACTS")
    assert parse_spec(BASE).artifacts == "./artifacts"
    monkeypatch.setenv("TRAINPIPE_ARTIFACTS", "")
    assert parse_spec(BASE).artifacts == "./artifacts"


def test_spec_is_frozen():
    spec = parse_spec(BASE)
    with pytest.raises(ValidationError, match="frozen"):
        spec.seed = 1  # type: ignore[misc]


def test_spec_file_without_name_takes_it_from_the_data(tmp_path):
    from trainpipe.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text("target: y\n")
    spec = load_spec(str(path), {"data": {"uris": ["data/cars-2024.csv"]}})
    assert spec.name == "cars-2024"


def test_promotion_defaults_and_bad_fields_are_named():
    from trainpipe.errors import SpecError
    from trainpipe.spec import parse_spec

    base = {"name": "m", "data": {"uris": ["x.csv"]}, "target": "y"}
    promotion = parse_spec(base).promotion
    assert (promotion.policy, promotion.metric, promotion.margin, promotion.confidence,
            promotion.bootstrap_samples) == ("gate", None, 0.0, 0.95, 1000)
    with pytest.raises(SpecError) as raised:
        parse_spec({**base, "promotion": {"metric": "f1", "confidence": 1.5, "policy": "sometimes"}})
    message = str(raised.value)
    assert "promotion.metric" in message and "promotion.confidence" in message and "promotion.policy" in message
