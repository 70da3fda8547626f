"""Drift: how a new version's training data differs from the champion's.

Every version stores a compact profile of its training rows (`data_profile.json`): per
column the null rate, decile edges and bin shares for numbers, level shares for
categories. A new run bins its own training rows on the champion's edges and levels and
reports per feature the population stability index (PSI), the null-rate change and new
or vanished categories, so a reviewer sees whether retraining follows a real change or
chases broken data.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import polars as pl
from prefect import task

from tasks.common import TRANSIENT_RETRIES
from trainpipe import storage
from trainpipe.registry import PROFILE_FILE, version_uri
from trainpipe.results import Drift, RunContext

BINS = 10
MAX_LEVELS = 200
EPS = 1e-4
# Usual reading of PSI: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 large shift.
PSI_MODERATE, PSI_LARGE = 0.1, 0.25
OTHER = "__other__"


def _is_numeric(dtype: pl.DataType) -> bool:
    """Numbers, dates and times are binned by value (a date's many levels made a noisy categorical PSI)."""
    return (dtype.is_numeric() and dtype != pl.Boolean) or dtype.is_temporal()


def column_profile(series: pl.Series, kind: Optional[str] = None) -> dict[str, Any]:
    """Null rate and value shares; `kind` forces categorical shares (a champion profiled before dates were
    binned by value)."""
    n = series.len()
    nulls = series.null_count()
    profile: dict[str, Any] = {"rows": n, "null_rate": nulls / n if n else 0.0}
    values = series.drop_nulls()
    if _is_numeric(series.dtype) and kind != "categorical":
        numbers = values.to_physical().cast(pl.Float64).to_numpy()
        numbers = numbers[np.isfinite(numbers)]
        edges = np.unique(np.quantile(numbers, np.linspace(0, 1, BINS + 1)[1:-1])) if len(numbers) else []
        profile.update(kind="numeric", edges=[float(e) for e in edges],
                       shares=bin_shares(numbers, list(map(float, edges))))
    else:
        counts = values.cast(pl.String).value_counts(sort=True, name="n").head(MAX_LEVELS)
        total = max(len(values), 1)
        shares = {str(v): c / total for v, c in zip(counts.get_column(values.name).to_list(),
                                                     counts.get_column("n").to_list(), strict=True)}
        rest = 1.0 - sum(shares.values())
        if rest > 1e-12:
            shares[OTHER] = rest
        profile.update(kind="categorical", shares=shares)
    return profile


def bin_shares(numbers: np.ndarray, edges: list[float]) -> list[float]:
    """Shares of values per bin (bins split at `edges`, right-closed), len(edges) + 1 of them."""
    if len(numbers) == 0:
        return [0.0] * (len(edges) + 1)
    counts = np.bincount(np.searchsorted(np.asarray(edges), numbers, side="left"), minlength=len(edges) + 1)
    return [float(c) / len(numbers) for c in counts]


# Profiles and drift are computed on a seeded sample of at most this many rows: shares of 10 bins and of the
# top levels are then within about 0.003 of the full data's (binomial standard error at 200k), while sorting and
# binning every value of every column was most of the drift stage at 1M rows (1.3 s of 1.6 s).
PROFILE_ROWS = 200_000


def profile_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """A seeded sample of `PROFILE_ROWS` rows, kept in row order (a sorted gather: a third of `sample`'s time)."""
    if frame.height <= PROFILE_ROWS:
        return frame
    from trainpipe.outofcore import sample_positions

    return frame[sample_positions(frame.height, PROFILE_ROWS)]


def data_profile(frame: pl.DataFrame, skip: list[str], rows: Optional[int] = None) -> dict[str, Any]:
    """Profile of every column but those in `skip` (the target, ids); `rows` counts the whole data (default: the
    frame's rows; given when the frame is already a sample of it)."""
    sample = profile_rows(frame)
    return {"rows": frame.height if rows is None else rows, "profiled_rows": sample.height,
            "columns": {c: column_profile(sample.get_column(c)) for c in frame.columns if c not in skip}}


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def column_drift(reference: dict[str, Any], series: pl.Series) -> dict[str, Any]:
    """PSI, null-rate change and category changes of `series` against a reference column profile."""
    numeric = reference["kind"] == "numeric"
    # a numeric column is binned on the reference's edges below: its own deciles would go unused
    current = {"null_rate": series.null_count() / series.len() if series.len() else 0.0} if numeric \
        else column_profile(series, reference["kind"])
    out: dict[str, Any] = {"null_rate_before": reference["null_rate"], "null_rate_now": current["null_rate"],
                           "null_rate_change": current["null_rate"] - reference["null_rate"]}
    if numeric:
        values = series.drop_nulls()
        numbers = (values.to_physical() if values.dtype.is_temporal() else values).cast(
            pl.Float64, strict=False).drop_nulls().to_numpy()
        out["psi"] = psi(reference["shares"], bin_shares(numbers, reference["edges"]))
        return out
    before, now = reference["shares"], current.get("shares", {})
    levels = sorted(set(before) | set(now))
    out["psi"] = psi([before.get(v, 0.0) for v in levels], [now.get(v, 0.0) for v in levels])
    out["new_categories"] = sorted(v for v in now if v not in before and v != OTHER)[:20]
    out["vanished_categories"] = sorted(v for v in before if v not in now and v != OTHER)[:20]
    return out


def shift_label(value: float) -> str:
    return "large" if value > PSI_LARGE else "moderate" if value > PSI_MODERATE else "stable"


def drift_report(reference: dict[str, Any], frame: pl.DataFrame, skip: list[str],
                 rows: Optional[int] = None) -> dict[str, Any]:
    """Per-column drift of `frame` against a reference data profile, largest shift first (`rows` as in
    `data_profile`)."""
    columns = {}
    present = set(frame.columns)
    rows, frame = (frame.height if rows is None else rows), profile_rows(frame)
    for name, ref in reference["columns"].items():
        if name in skip:
            continue
        if name not in present:
            columns[name] = {"missing_now": True}
            continue
        columns[name] = {**column_drift(ref, frame.get_column(name))}
        columns[name]["shift"] = shift_label(columns[name]["psi"])
    added = [c for c in frame.columns if c not in reference["columns"] and c not in skip]
    ranked = dict(sorted(columns.items(), key=lambda kv: -kv[1].get("psi", float("inf"))))
    return {"rows_before": reference["rows"], "rows_now": rows, "columns": ranked, "new_columns": added,
            "large_shifts": [c for c, d in ranked.items() if d.get("shift") == "large" or d.get("missing_now")]}


def champion_profile(artifacts: str, name: str, version: Optional[int]) -> Optional[dict[str, Any]]:
    """The stored training-data profile of a version (None when there is no champion or no profile)."""
    if version is None:
        return None
    uri = storage.join(version_uri(artifacts, name, version), PROFILE_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None


@task(name="drift", **TRANSIENT_RETRIES)
def drift_task(run: RunContext, champion_version: Optional[int]) -> Drift:
    """This run's training-data profile, and its drift against the champion's when there is one."""
    skip = [run.spec.target, *run.spec.id_columns]
    if run.parts.out_of_core:  # a seeded sample of PROFILE_ROWS rows, gathered slice by slice
        from trainpipe.outofcore import sample_rows

        rows = run.parts.rows["train"]
        sample = sample_rows(run.parts.uris["train"], rows, PROFILE_ROWS)
    else:
        train = storage.read_parquet(run.parts.uris["train"])
        rows, sample = train.height, profile_rows(train)  # sampled once for the profile and the report
        del train
    reference = champion_profile(run.artifacts, run.spec.name, champion_version)
    report = None
    if reference is not None:
        report = {"champion_version": champion_version, **drift_report(reference, sample, skip, rows)}
    return Drift(profile=data_profile(sample, skip, rows), report=report)
