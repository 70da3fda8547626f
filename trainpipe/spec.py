"""The one typed spec of a training run: the flow parameter, the CLI's input, the YAML file."""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainpipe.errors import SpecError

TaskType = Literal["binary", "multiclass", "regression"]
DataFormat = Literal["csv", "parquet", "ndjson"]

FORMAT_SUFFIXES: dict[str, DataFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}

DEFAULT_NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def default_artifacts_uri() -> str:
    """The artifact root: `TRAINPIPE_ARTIFACTS` when set, else `./artifacts`."""
    return os.environ.get("TRAINPIPE_ARTIFACTS") or "./artifacts"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Spec):
    uris: list[str] = Field(
        min_length=1,
        title="Data URIs",
        description=(
            "Where the training data lives: a file, a glob (data/*.csv) or a folder/prefix, "
            "as a local path, file:// or s3:// URI. Several may be listed; all are read and stacked."
        ),
    )
    format: Optional[DataFormat] = Field(
        default=None,
        description="File format. Leave empty to infer it from the file suffix (.csv, .parquet, .ndjson/.jsonl).",
    )
    separator: str = Field(default=",", min_length=1, max_length=1, description="CSV field separator.")
    null_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NULL_VALUES),
        description="CSV cell values read as missing.",
    )

    @field_validator("uris", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ValidationSpec(_Spec):
    mode: Literal["enforce", "warn"] = Field(
        default="enforce",
        description="enforce: a contract violation fails the run before training. warn: it is reported only.",
    )
    range_tolerance: float = Field(
        default=0.5,
        ge=0,
        description=(
            "How far numeric values may leave the contract's observed range, as a fraction of that range "
            "(0.5 lets a column seen in [0, 10] take values in [-5, 15])."
        ),
    )
    allow_new_categories: bool = Field(
        default=False,
        description="Accept category values the contract has not seen (they are scored as unseen).",
    )
    max_examples: int = Field(default=5, ge=1, le=100, description="Failing values shown per check in the report.")


class DerivedColumn(_Spec):
    name: str = Field(description="Name of the new column.")
    expr: str = Field(
        description="A SQL expression over the data's columns, e.g. `bill_length_mm / bill_depth_mm`.",
    )


DatetimePart = Literal["year", "month", "day", "weekday", "hour", "minute", "dayofyear"]


class FeatureSpec(_Spec):
    derived: list[DerivedColumn] = Field(default_factory=list, description="Extra columns computed from the data.")
    datetime_parts: list[DatetimePart] = Field(
        default_factory=lambda: ["year", "month", "day", "weekday", "hour"],
        description="Parts extracted from date/datetime columns (the raw timestamp is not a feature).",
    )
    max_categories: int = Field(
        default=256,
        ge=2,
        le=100_000,
        description=(
            "Most levels kept per categorical column (most frequent first; the rest count as unseen). "
            "A text column with distinct values in over half its rows (and more than 20) is dropped as an identifier."
        ),
    )
    min_category_count: int = Field(
        default=5,
        ge=1,
        description=(
            "Levels seen fewer times than this in training are treated like unseen ones (as missing), "
            "so the model learns where rare and new levels go."
        ),
    )
    native_category_levels: int = Field(
        default=64,
        ge=0,
        description=(
            "Categorical columns with at most this many levels use XGBoost's categorical splits; columns with more "
            "are given as their level's frequency rank (a number), because partition splits over many levels "
            "overfit. 0: every categorical column as a rank."
        ),
    )
    numeric_threshold: float = Field(
        default=0.98,
        gt=0,
        le=1,
        description="A text column whose non-missing values parse as numbers at least this often is made numeric.",
    )

    @field_validator("derived")
    @classmethod
    def _distinct_names(cls, derived: list[DerivedColumn]) -> list[DerivedColumn]:
        names = [d.name for d in derived]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"derived column names repeat: {', '.join(repeated)}")
        return derived


class SplitSpec(_Spec):
    method: Optional[Literal["random", "stratified", "time"]] = Field(
        default=None,
        description="How rows are split. Empty: stratified for classification, random for regression.",
    )
    test_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="Share of rows held out for evaluation.")
    validation_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=0.9,
        description="Share of the remaining training rows used for early stopping.",
    )
    time_column: Optional[str] = Field(
        default=None, description="Column ordering rows in time; required for the time split (latest rows are tested)."
    )

    @model_validator(mode="after")
    def _time_needs_column(self) -> SplitSpec:
        if self.method == "time" and not self.time_column:
            raise ValueError("split.method 'time' needs split.time_column")
        return self


class XGBoostSpec(_Spec):
    num_boost_round: int = Field(default=1000, ge=1, le=100_000, description="Most boosting rounds.")
    early_stopping_rounds: int = Field(
        default=50, ge=1, description="Stop when the validation metric has not improved for this many rounds."
    )
    learning_rate: Optional[float] = Field(
        default=None, gt=0, le=1,
        description=(
            "Shrinkage per round (eta). Empty: 0.1 when the training part has under 100,000 rows, else 0.3 "
            "(XGBoost's default: about a third of the rounds, for a holdout score within a few thousandths)."
        ),
    )
    max_depth: int = Field(default=6, ge=0, le=64, description="Maximum tree depth (0: no limit).")
    min_child_weight: float = Field(default=1.0, ge=0)
    subsample: float = Field(default=1.0, gt=0, le=1, description="Row share sampled per tree.")
    colsample_bytree: float = Field(default=1.0, gt=0, le=1, description="Column share sampled per tree.")
    reg_lambda: float = Field(default=1.0, ge=0, description="L2 regularisation.")
    reg_alpha: float = Field(default=0.0, ge=0, description="L1 regularisation.")
    max_bin: int = Field(default=256, ge=2, description="Histogram bins per feature.")
    refit: Optional[bool] = Field(
        default=None,
        description=(
            "After early stopping picks the number of rounds, refit on training + validation rows with that many "
            "rounds (the test part stays untouched). Empty: yes when the training part has under 100,000 rows "
            "(cheap there, and the extra rows help), no above (it would double the training time)."
        ),
    )
    nthread: Optional[int] = Field(default=None, ge=1, description="Threads for training. Empty: all cores.")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="cuda trains on a GPU when the worker has one.")
    extra_params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Any other XGBoost parameter, passed through as is."
    )


class SearchRange(_Spec):
    low: float = Field(description="Smallest value tried.")
    high: float = Field(description="Largest value tried.")
    log: bool = Field(default=False, description="Sample on a log scale (both bounds must be above 0).")
    integer: Optional[bool] = Field(
        default=None,
        description="Whole numbers only. Empty: yes for XGBoost's integer parameters (max_depth, max_bin, ...).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> SearchRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, not {self.low}")
        return self


class TuningSpec(_Spec):
    trials: int = Field(default=0, ge=0, description="Optuna trials. 0 trains once with the parameters above.")
    # Defaults chosen from measurements (README "Tuning"): on 2 cores two 1-thread trials beat one 2-thread
    # trial, the percentile pruner stops more hopeless trials than the median one for the same holdout, and
    # trials on a 150k-row sample tune the 336k-row flights data in 0.38 of a plain loop's time, 1.7 % better.
    parallelism: int = Field(
        default=2, ge=1, le=64,
        description="Trials run at once; the machine's cores are split between them. The same seed, data, spec "
                    "and parallelism give the same trials.",
    )
    timeout_seconds: Optional[float] = Field(
        default=None, gt=0,
        description="Wall-clock budget for tuning: when it is spent, tuning ends with the best trial so far.",
    )
    pruner: Literal["median", "percentile", "successive_halving", "none"] = Field(
        default="percentile",
        description=(
            "How hopeless trials are stopped early from their per-round validation scores. median: stop a trial "
            "worse than half of the finished ones at the same round; percentile: worse than the best quarter; "
            "successive_halving: keep only the best third at rounds w, 3w, 9w..."
        ),
    )
    trial_rows: Optional[int] = Field(
        default=150_000, ge=100,
        description=(
            "Train each trial on a seeded random sample of at most this many training rows (validation scores "
            "use every validation row); the final model is refit on all rows. Empty: every row. Speeds up tuning "
            "on large data; the same sample is used by every trial."
        ),
    )
    search_space: dict[str, SearchRange | float | int | str | bool] = Field(
        default_factory=dict,
        description=(
            "Changes to the default search space, by XGBoost parameter name: a range {low, high, log} to search, "
            "or a fixed value. Parameters not named keep their default range."
        ),
    )
    storage: Optional[str] = Field(
        default=None,
        description=(
            "Where trials are recorded. Empty: in memory (one process). 'journal': a journal file in the artifact "
            "store's local folder. Or an Optuna storage URL, e.g. postgresql://user@host/db, so several processes "
            "share one study and a re-run resumes it. A URL with a password: env:NAME, the name of an environment "
            "variable that holds it on the workers, or secret:NAME, a Prefect Secret block holding it (never the "
            "password itself: the spec is stored and shown)."
        ),
    )
    study_name: Optional[str] = Field(
        default=None,
        description="Study name in the storage. Empty: the model name plus a key of the data and tuning settings.",
    )

    @field_validator("storage")
    @classmethod
    def _storage_kind(cls, value: Optional[str]) -> Optional[str]:
        if value is None or value == "journal":
            return value
        if value.startswith("env:"):
            if not value[4:].replace("_", "").isalnum():
                raise ValueError(f"expected env:NAME with an environment variable's name, not {value!r}")
            return value
        if value.startswith("secret:"):
            if not value[7:] or not value[7:].replace("-", "").isalnum() or value[7:] != value[7:].lower():
                raise ValueError(f"expected secret:NAME with a Prefect Secret block's name, not {value!r}")
            return value
        if "://" not in value:
            raise ValueError("expected 'journal', env:NAME, secret:NAME or a storage URL such as postgresql://user@host/db, "
                             f"not {value!r}")
        from urllib.parse import urlsplit

        if urlsplit(value).password is not None:
            # The spec is a flow-run parameter (shown in the UI, sent to workers) and stored in every manifest.
            raise ValueError("a password in the storage URL would be stored with every model and shown in Prefect; "
                             "put the URL in an environment variable and write env:NAME (e.g. "
                             "env:TRAINPIPE_OPTUNA_STORAGE), or leave the password to PGPASSWORD or ~/.pgpass")
        return value


class PromotionSpec(_Spec):
    policy: Literal["gate", "always", "never"] = Field(
        default="gate",
        description=(
            "gate: the new version becomes champion only if it beats the current champion (re-scored on the new "
            "holdout) by the margin and the bootstrap interval rules out a regression; the first version must beat "
            "the trivial baseline that way. always: every new version becomes champion. never: only by hand "
            "(trainpipe models promote)."
        ),
    )
    metric: Optional[Literal["auc", "logloss", "accuracy", "mlogloss", "rmse", "mae", "r2"]] = Field(
        default=None,
        description="Metric the gate compares (auc, logloss, accuracy, mlogloss, rmse, mae, r2). Empty: the "
                    "task's headline metric (auc, mlogloss or rmse).",
    )
    margin: float = Field(
        default=0.0, ge=0,
        description="How much better (in the metric's units) the new version must be on the holdout to be promoted.",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1,
        description="Confidence of the interval of the metric difference (paired bootstrap, or normal on large "
                    "holdouts); its lower end must be above zero (no regression).",
    )
    bootstrap_samples: int = Field(
        default=1000, ge=100, le=100_000, description="Bootstrap resamples of the holdout rows."
    )
    bootstrap_rows: Optional[int] = Field(
        default=10_000, ge=1000,
        description=(
            "Largest holdout the paired bootstrap resamples; a bigger holdout gets the normal interval of the "
            "paired per-row influence values over every row (DeLong's for AUC), which the bootstrap converges to "
            "at that size, in one pass. Empty: always bootstrap (slower on large holdouts)."
        ),
    )


class ComputeSpec(_Spec):
    train_pool: Optional[str] = Field(
        default=None,
        pattern=NAME_PATTERN,
        title="Training pool",
        description=(
            "Work pool that runs tuning and training (e.g. gpu), through its deployment trainpipe-fit/fit-<pool>. "
            "Empty: in the same process as the data stages."
        ),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables for the training part's job on that pool (override the pool's). "
            "Not for secrets: the spec is stored with every model version."
        ),
    )
    engine: Literal["local", "dask"] = Field(
        default="local",
        title="Training engine",
        description=(
            "local: XGBoost on the one machine running the fit. dask: one model trained over a Dask cluster "
            "(xgboost.dask) and tuning trials spread over its workers; the cluster is never started by trainpipe."
        ),
    )
    dask_address: Optional[str] = Field(
        default=None,
        pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        title="Dask scheduler",
        description=(
            "Address of the Dask scheduler for engine dask, e.g. tcp://10.0.0.5:8786. "
            "Empty: the worker's TRAINPIPE_DASK_ADDRESS (set by the dask pool's job variables)."
        ),
    )
    partition_rows: int = Field(
        default=1_000_000,
        ge=1000,
        title="Rows per partition",
        description=(
            "Most rows in one Parquet partition of a feature matrix: the unit a Dask worker (or an out-of-core "
            "reader) loads at once. Data below this size is one partition, as a single-machine run wants."
        ),
    )
    external_memory: Literal["auto", "on", "off"] = Field(
        default="auto",
        title="External memory",
        description=(
            "Train on data larger than memory: on feeds the feature matrix's partitions one at a time to XGBoost's "
            "external memory (ExtMemQuantileDMatrix, its pages cached on local disk; TRAINPIPE_EXTMEM_DIR says "
            "where) and scores the holdout partition by partition. off holds the matrices in memory (fastest). "
            "auto: on when the float32 training + validation matrices exceed a third of the memory left to the "
            "process (host, memory cgroup or ulimit -v, the least). For the data stages to stay within memory too, "
            "set partition_rows small (e.g. 250000). Engine dask: each worker streams its own partitions the same "
            "way (pages in the worker's TRAINPIPE_EXTMEM_DIR); auto compares each worker's share with its "
            "--memory-limit."
        ),
    )


class TrainSpec(_Spec):
    """Everything that decides what a training run produces."""

    name: str = Field(pattern=NAME_PATTERN, description="Model name: versions of one name form its history.")
    data: DataSpec
    target: str = Field(min_length=1, description="Column to predict.")
    task: Optional[TaskType] = Field(
        default=None, description="binary, multiclass or regression. Empty: inferred from the target column."
    )
    id_columns: list[str] = Field(
        default_factory=list, description="Identifier columns: kept beside predictions, never used as features."
    )
    drop_columns: list[str] = Field(default_factory=list, description="Columns ignored entirely.")
    seed: int = Field(default=42, ge=0, description="Seed for the split, sampling in XGBoost and tuning.")
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    xgboost: XGBoostSpec = Field(default_factory=XGBoostSpec)
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    artifacts: str = Field(
        default_factory=default_artifacts_uri,
        description="Artifact store root (local path, file:// or s3://). Default: $TRAINPIPE_ARTIFACTS or ./artifacts.",
    )

    @model_validator(mode="after")
    def _columns_distinct(self) -> TrainSpec:
        if self.target in self.id_columns or self.target in self.drop_columns:
            raise ValueError(f"target column {self.target!r} is also listed in id_columns or drop_columns")
        return self


def infer_format(uri: str) -> DataFormat:
    """The data format named by a file's suffix (compression suffixes aside)."""
    suffixes = [s.lower() for s in PurePosixPath(uri.split("?")[0]).suffixes]
    while suffixes and suffixes[-1] in (".gz", ".zst", ".bz2"):
        suffixes.pop()
    if suffixes and suffixes[-1] in FORMAT_SUFFIXES:
        return FORMAT_SUFFIXES[suffixes[-1]]
    raise SpecError(f"cannot infer the format of {uri!r} from its suffix; set data.format (csv, parquet or ndjson)")


def default_model_name(uri: str) -> str:
    """A model name derived from a data URI's file or folder name."""
    stem = PurePosixPath(uri.rstrip("/").split("?")[0]).name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"
    return name[:128]


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid spec {source}:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(spec)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_spec(raw: dict[str, Any], source: str = "") -> TrainSpec:
    """Validate a spec dict, turning pydantic's errors into one message naming each bad field."""
    try:
        return TrainSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(_format_errors(error, source)) from None


def load_spec(path: str, overrides: Optional[dict[str, Any]] = None) -> TrainSpec:
    """Read a YAML spec file; `overrides` are merged on top (nested dicts merge)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"spec file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec file {path} must hold a mapping of fields, not {type(raw).__name__}")
    merged = merge_dicts(raw, overrides or {})
    uris = (merged.get("data") or {}).get("uris") if isinstance(merged.get("data"), dict) else None
    if "name" not in merged and uris:
        merged["name"] = default_model_name(uris if isinstance(uris, str) else uris[0])
    return parse_spec(merged, source=path)


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `top` over `base`, recursing where both hold dicts."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged
