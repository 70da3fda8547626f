"""tasks.predict: scoring rows through a stored transform, output columns per task, end-to-end from the registry."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.predict import predict, score_frame
from tasks.train import fit_booster
from trainpipe import storage
from trainpipe.boosting import booster_params, load_matrix, model_bytes
from trainpipe.errors import DataError, RegistryError, SpecError
from trainpipe.registry import publish_version
from trainpipe.scoring import load_version
from trainpipe.spec import XGBoostSpec
from trainpipe.transform import LABEL, apply_transform


@pytest.fixture
def model_for(prepared):
    def build(task: str):
        prep = prepared(task)
        types = prep["transform"]["feature_types"]
        n_classes = len(prep["classes"]) if prep["classes"] else None
        params = booster_params(XGBoostSpec(nthread=2), task, n_classes, seed=1)
        booster, _ = fit_booster(load_matrix(prep["matrices"]["train"], types),
                                 load_matrix(prep["matrices"]["valid"], types), params, 50, 10)
        return prep, booster

    return build


def raw_predictions(booster, frame: pl.DataFrame, transform: dict) -> np.ndarray:
    features = apply_transform(frame, transform).with_columns(pl.lit(0.0).alias(LABEL))
    return booster.predict(load_matrix(features, transform["feature_types"]))


def test_score_binary(model_for):
    prep, booster = model_for("binary")
    rows = prep["parts"]["test"].drop("y")
    scored = score_frame(rows, booster, prep["transform"], "test.csv")
    assert scored.columns == ["rid", "prediction", "proba_neg", "proba_pos"]
    assert scored.height == rows.height
    assert scored.get_column("rid").to_list() == rows.get_column("rid").to_list()
    assert scored.schema["prediction"] == pl.String
    np.testing.assert_allclose(scored.get_column("proba_pos").to_numpy(),
                               raw_predictions(booster, rows, prep["transform"]), rtol=1e-6)
    np.testing.assert_allclose(scored.get_column("proba_neg") + scored.get_column("proba_pos"), 1.0, rtol=1e-6)
    expected = np.where(scored.get_column("proba_pos").to_numpy() > 0.5, "pos", "neg")
    assert scored.get_column("prediction").to_list() == expected.tolist()


def test_score_multiclass(model_for):
    prep, booster = model_for("multiclass")
    rows = prep["parts"]["test"]
    scored = score_frame(rows, booster, prep["transform"], "test.csv")
    assert scored.columns == ["rid", "prediction", "proba_a", "proba_b", "proba_c"]
    prob = scored.select(["proba_a", "proba_b", "proba_c"]).to_numpy()
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    assert scored.get_column("prediction").to_list() == [["a", "b", "c"][i] for i in prob.argmax(axis=1)]
    # a learnable problem: better than always answering the most common class
    majority = rows.get_column("y").value_counts().get_column("count").max() / rows.height
    assert (scored.get_column("prediction") == rows.get_column("y")).mean() > majority + 0.1


def test_score_regression(model_for):
    prep, booster = model_for("regression")
    rows = prep["parts"]["test"]
    scored = score_frame(rows, booster, prep["transform"], "test.csv")
    assert scored.columns == ["rid", "prediction"]
    assert scored.schema["prediction"] == pl.Float32  # the precision XGBoost scores in
    np.testing.assert_allclose(scored.get_column("prediction").to_numpy(),
                               raw_predictions(booster, rows, prep["transform"]), rtol=1e-6)


def test_score_without_id_columns_in_the_rows(model_for):
    prep, booster = model_for("regression")
    scored = score_frame(prep["parts"]["test"].drop("rid"), booster, prep["transform"], "test.csv")
    assert scored.columns == ["prediction"]


def test_score_integer_classes(model_for):
    prep, booster = model_for("binary")
    transform = {**prep["transform"], "target": {**prep["transform"]["target"], "classes": [0, 1]}}
    scored = score_frame(prep["parts"]["test"], booster, transform, "test.csv")
    assert scored.columns == ["rid", "prediction", "proba_0", "proba_1"]
    assert set(scored.get_column("prediction").to_list()) <= {0, 1}


def test_score_missing_required_column_names_source(model_for):
    prep, booster = model_for("binary")
    with pytest.raises(DataError, match="new.csv: missing required column"):
        score_frame(prep["parts"]["test"].drop("x1"), booster, prep["transform"], "new.csv")


@pytest.fixture
def published(model_for, tmp_path):
    prep, booster = model_for("binary")
    root = str(tmp_path / "artifacts")
    files = {"model.ubj": model_bytes(booster), "transform.json": storage.dumps_json(prep["transform"])}
    version, folder = publish_version(root, "churn", files, {"identity": {"model_sha256": "x"}})
    return prep, booster, root, folder


def test_predict_from_a_published_version(published, tmp_path):
    prep, booster, root, _ = published
    rows = prep["parts"]["test"].drop("y")
    data_uri = str(tmp_path / "new.csv")
    rows.write_csv(data_uri)
    out_uri = str(tmp_path / "out" / "scores.parquet")
    done = predict(root, "churn", data_uri, out_uri)
    assert (done["model"], done["version"], done["rows"]) == ("churn", 1, rows.height)
    written = pl.read_parquet(out_uri)
    expected = score_frame(rows, booster, prep["transform"], data_uri)
    assert written.columns == expected.columns
    np.testing.assert_allclose(written.get_column("proba_pos").to_numpy(),
                               expected.get_column("proba_pos").to_numpy(), rtol=1e-5)


def test_predict_writes_csv(published, tmp_path):
    prep, _, root, _ = published
    data_uri = str(tmp_path / "new.parquet")
    prep["parts"]["test"].write_parquet(data_uri)
    out_uri = str(tmp_path / "scores.csv")
    predict(root, "churn:1", data_uri, out_uri)
    assert pl.read_csv(out_uri).columns == ["rid", "prediction", "proba_neg", "proba_pos"]


def test_predict_bad_output_name_fails_before_work(published, tmp_path):
    _, _, root, _ = published
    with pytest.raises(SpecError, match="--out 'scores.xlsx'"):
        predict(root, "churn", str(tmp_path / "missing.csv"), "scores.xlsx")


def test_tampered_model_is_refused(published):
    _, _, root, folder = published
    assert load_version(root, "churn")["version"] == 1
    storage.write_bytes(storage.join(folder, "model.ubj"), b"tampered")
    with pytest.raises(RegistryError, match="model.ubj does not match its manifest hash"):
        load_version(root, "churn")


def test_kept_columns_ride_along_and_unknown_ones_are_named(model_for):
    prep, booster = model_for("binary")
    rows = prep["parts"]["test"].drop("y").with_columns(pl.col("x2").alias("note"))
    scored = score_frame(rows, booster, prep["transform"], "test.csv", keep=["note"])
    assert scored.columns[:2] == ["rid", "note"]
    assert scored.get_column("note").to_list() == rows.get_column("note").to_list()
    with pytest.raises(DataError, match="no column\\(s\\) nope to keep"):
        score_frame(rows, booster, prep["transform"], "test.csv", keep=["nope"])


def test_unseen_categories_are_counted(model_for):
    from tasks.predict import unseen_categories

    prep, _ = model_for("binary")
    rows = prep["parts"]["test"].head(10).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("zzz")).otherwise(pl.col("c")).alias("c"))
    assert unseen_categories(rows, prep["transform"]) == {"c": 3}
    assert unseen_categories(prep["parts"]["test"], prep["transform"]) == {}


def test_text_in_a_numeric_feature_is_refused_naming_column_rows_and_values():
    from trainpipe.errors import DataError
    from trainpipe.transform import check_numeric_inputs

    transform = {"inputs": [{"name": "x", "kind": "numeric"}, {"name": "t", "kind": "numeric", "coerced_from": "text"}]}
    check_numeric_inputs(pl.DataFrame({"x": ["1", " 2.5 ", None, ""], "t": ["a", "1", "2", "3"]}), transform, "f.csv")
    with pytest.raises(DataError, match=r"f\.csv: column 'x' holds text that is not a number in 2 row\(s\) "
                                        r"\(rows 2, 4; e\.g\. 'abc', 'n/a'\)"):
        check_numeric_inputs(pl.DataFrame({"x": ["1", "abc", "3", "n/a"]}), transform, "f.csv")
