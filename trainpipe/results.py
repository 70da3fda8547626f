"""Typed stage results: what one stage hands the next (URIs and small metadata, never frames).

Every cached stage's result carries the `fingerprint` of its output content; a downstream
stage's cache key reduces a result to that fingerprint (`provenance.canonical`), so a stage
re-run that yields the same bytes leaves everything after it cached. The uncached tail of
the flow (evaluate, gate, drift, plots, store, promote) takes one frozen `RunContext`.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainpipe.spec import TaskType, TrainSpec


class Result(BaseModel):
    """A small, frozen, JSON-serialisable value passed between tasks (and stored as a stage's marker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StageResult(Result):
    """The outputs of a content-addressed stage folder."""

    fingerprint: str = Field(description="sha256 of the stage's output content; downstream cache keys use it")
    stage_key: str = Field(description="the stage folder's key: a hash of its inputs and the code version")
    seconds: float = 0.0
    from_store: bool = Field(False, description="served from a complete stage folder instead of recomputed")


class Sources(Result):
    """The listed input files with their content tags, and one fingerprint over them all."""

    files: list[dict[str, Any]]
    fingerprint: str


class MemoryPlan(Result):
    """Whether a run's data stages and fit work out of core (in bounded memory), decided once before ingest."""

    mode: str = Field(description="compute.external_memory as the spec gives it: auto, on or off")
    out_of_core: bool
    data_bytes: int = Field(description="the inputs' estimated size in memory")
    available_bytes: Optional[int] = Field(None, description="memory left to the process when auto decided")
    reason: str


class Snapshot(StageResult):
    """All inputs stacked into one Parquet file."""

    uri: str
    sha256: str
    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    sources: list[dict[str, Any]]
    notes: list[str] = []  # what was read differently from polars' guess (dates in mixed formats as text)
    out_of_core: bool = False  # written by polars' streaming engine, never held whole


class ContractRef(Result):
    """The data contract in force: the latest version's, by URI and content hash."""

    uri: str
    fingerprint: str
    version: int


class Validated(StageResult):
    """Rows that passed the data contract (null targets dropped), the contract and the report."""

    uri: str
    contract_uri: str
    report_uri: str
    rows: int
    task_type: TaskType = Field(description="binary, multiclass or regression (the ML task; `task` is Prefect's)")
    task_reason: str
    classes: Optional[list[Any]]
    dropped_null_target: int
    violations: int
    leakage: list[str] = []  # features equal to the target in every row
    out_of_core: bool = False  # checked column by column, written by polars' streaming engine

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes or [])


PART_ORDER = ("train", "valid", "test")


def in_part_order(value: dict[str, Any]) -> dict[str, Any]:
    """A per-part mapping with its keys in one order (train, valid, test, then any other by name).

    A result read back from a stage marker or Prefect's cache comes from JSON with sorted keys, a fresh one in
    the order it was built: a stage that walks the parts (and hashes what it writes in that order) must see the
    same order from either, or identical runs get different fingerprints."""
    rank = {name: i for i, name in enumerate(PART_ORDER)}
    return {key: value[key] for key in sorted(value, key=lambda k: (rank.get(k, len(rank)), k))}


class Parts(StageResult):
    """Train / validation / test parts of the validated rows."""

    uris: dict[str, str]
    rows: dict[str, int]
    method: str
    out_of_core: bool = False  # split by row slices

    _order = field_validator("uris", "rows")(in_part_order)


class Matrices(StageResult):
    """Feature matrices of the three parts (features plus the encoded label) and the fitted transform."""

    uris: dict[str, str]
    rows: dict[str, int] = Field(default_factory=dict, description="rows of each part's matrix")
    partitions: dict[str, list[str]] = Field(
        default_factory=dict, description="each part's Parquet partition URIs in row order (trainpipe.matrices)"
    )
    transform_uri: str
    features: list[str]
    feature_types: list[str]
    dropped: list[dict[str, str]]
    out_of_core: bool = False  # transform fitted column by column, applied slice by slice; train streams them

    _order = field_validator("uris", "rows", "partitions")(in_part_order)


class FittedModel(StageResult):
    """The trained booster in XGBoost's UBJSON format, with what training chose."""

    model_uri: str
    model_sha256: str
    params: dict[str, Any]
    rounds_trained: int
    best_iteration: int
    best_validation_score: float
    validation_metric: str
    refit_on_train_and_valid: bool
    rounds_from_trial: Optional[int] = Field(
        default=None, description="the tuning trial whose early stopping chose the rounds (trained once, no re-run)"
    )
    tuning: Optional[dict[str, Any]] = None
    external_memory: Optional[dict[str, Any]] = Field(
        default=None, description="set when trained through XGBoost's external memory: partitions read, cache bytes"
    )
    attachments: Optional[dict[str, str]] = None
    engine: Optional[dict[str, Any]] = Field(None, description="engine dask: scheduler and workers it trained on")


class Fit(Result):
    """What the fit subflow returns: the model, the tune/train stage records and where it ran."""

    model: FittedModel
    stages: dict[str, dict[str, Any]]
    device: str
    concurrency: Optional[dict[str, Any]] = None
    flow_run: Optional[dict[str, Any]] = None


class Evaluation(StageResult):
    """Holdout metrics of the model and of the trivial baseline, importance, and the holdout scores' file."""

    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    headline_metric: str
    test_rows: int
    importance: list[dict[str, Any]]
    holdout_uri: str = Field(description="Parquet of the holdout labels, model scores and baseline scores")


class Verdict(Result):
    """The promotion gate's decision on a new version, with its evidence."""

    model_config = ConfigDict(frozen=True, extra="allow")

    policy: str
    metric: str
    margin: float
    against: str
    champion_version: Optional[int]
    promote: bool
    reason: str
    evidence: Optional[dict[str, Any]] = None
    champion_metrics: Optional[dict[str, float]] = None


class Stored(Result):
    """A published (or re-found) version."""

    version: int
    uri: str
    reused: bool = Field(description="an identical version that already has its verdict: nothing new was done")
    repaired: list[str] = Field(default_factory=list, description="audit records appended for an existing version")
    seconds: float = 0.0


class RunContext(Result):
    """Everything the uncached tail of a training run reads, frozen once the model is fitted."""

    spec: TrainSpec
    artifacts: str
    sources: Sources
    snapshot: Snapshot
    validated: Validated
    parts: Parts
    matrices: Matrices
    fit: Fit
    stages: dict[str, dict[str, Any]]
    trigger: Optional[dict[str, Any]] = None
    memory: Optional[MemoryPlan] = None

    @property
    def model(self) -> FittedModel:
        return self.fit.model

    def summary(self, outcome: Outcome) -> dict[str, Any]:
        """The run's result as the CLI's `--json` and callers of the flow read it."""
        promotion = outcome.promotion.model_dump(mode="json")
        return {
            "model": self.spec.name,
            "version": outcome.stored.version,
            "uri": outcome.stored.uri,
            "reused": outcome.stored.reused,
            "repaired": outcome.stored.repaired,
            "task": self.validated.task_type,
            "task_inferred": self.spec.task is None,
            "task_reason": self.validated.task_reason,
            "headline_metric": outcome.headline_metric,
            "metrics": outcome.metrics,
            "baseline_metrics": outcome.baseline_metrics,
            "rows": self.parts.rows,
            "dropped_null_target": self.validated.dropped_null_target,
            "contract_violations": self.validated.violations,
            "leakage_warning": self.validated.leakage,
            "dropped_features": self.matrices.dropped,
            "data_fingerprint": self.sources.fingerprint,
            "stages": self.stages,
            "tuning": self.model.tuning,
            "promoted": outcome.promotion.moved,
            "promotion": {k: promotion.get(k) for k in ("promote", "moved", "reason", "policy", "metric", "against",
                                                         "champion_version", "evidence", "audit_seq")},
            "drift_large_shifts": outcome.drift_large_shifts,
            "fit_run": self.fit.flow_run,
            "trigger": self.trigger,
            "memory": self.memory.model_dump(mode="json") if self.memory else None,
        }

    @property
    def identity(self) -> dict[str, str]:
        """What makes two versions the same: model bytes, data and transform."""
        return {"model_sha256": self.model.model_sha256, "data": self.sources.fingerprint,
                "transform": self.matrices.fingerprint}


class Promotion(Verdict):
    """The final verdict once recorded: whether `champion` moved, and the audit record that moved it."""

    moved: bool
    audit_seq: Optional[int] = None

    @classmethod
    def unchanged(cls, verdict: dict[str, Any], version: int, champion: Optional[int]) -> Promotion:
        """A re-run that found `version` already stored and judged: nothing moves, nothing is recorded."""
        return cls(**{**verdict, "promote": champion == version, "moved": False, "audit_seq": None,
                      "reason": f"identical to the stored v{version}: nothing new to promote "
                                f"(champion is {'v' + str(champion) if champion else 'none'})"})


class Tuned(StageResult):
    """A finished tuning run: the best parameters, the study's summary and its published files."""

    best_params: dict[str, Any]
    summary: dict[str, Any]
    attachments: dict[str, str]


class Drift(Result):
    """This run's training-data profile, and its drift against the champion's (None without one)."""

    profile: dict[str, Any]
    report: Optional[dict[str, Any]] = None


class Outcome(Result):
    """How a training run ended: the version, its holdout metrics, the promotion and the drift headline."""

    stored: Stored
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    headline_metric: str
    promotion: Promotion
    drift_large_shifts: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, stored: Stored, evaluation: Evaluation, promotion: Promotion, drift: Drift) -> Outcome:
        return cls(stored=stored, metrics=evaluation.metrics, baseline_metrics=evaluation.baseline_metrics,
                   headline_metric=evaluation.headline_metric, promotion=promotion,
                   drift_large_shifts=(drift.report or {}).get("large_shifts") or [])
