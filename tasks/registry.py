"""Registry: immutable model versions in the artifact store, published atomically.

Layout: `<artifacts>/models/<name>/versions/<n>/` holds the model (UBJSON), its fitted
transform, data contract, metrics, validation report, feature importance, model card and
manifest. A version number is claimed with a create-only write of `_CLAIM`; the files are
written next; `_COMMITTED` is written last. Readers list only committed versions, so a run
that dies half-way leaves nothing visible, and two runs never get the same number.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from tasks.common import TRANSIENT_RETRIES
from tasks.validate import contract_origin
from trainpipe import storage
from trainpipe.errors import RegistryError
from trainpipe.provenance import code_version, package_versions
from trainpipe.spec import NAME_PATTERN, TrainSpec

CLAIM, COMMITTED, MANIFEST = "_CLAIM", "_COMMITTED", "manifest.json"
MANIFEST_FORMAT = 1


def models_root(artifacts: str) -> str:
    return storage.join(artifacts, "models")


def version_uri(artifacts: str, name: str, version: int) -> str:
    return storage.join(models_root(artifacts), name, "versions", str(version))


def _numbers(names: list[str]) -> list[int]:
    return sorted(int(n) for n in names if n.isdigit())


def claimed_versions(artifacts: str, name: str) -> list[int]:
    """Every version number ever claimed, committed or not."""
    return _numbers(storage.list_dir(storage.join(models_root(artifacts), name, "versions")))


def list_versions(artifacts: str, name: str) -> list[int]:
    """Committed versions of a model, oldest first."""
    return [v for v in claimed_versions(artifacts, name)
            if storage.exists(storage.join(version_uri(artifacts, name, v), COMMITTED))]


def list_models(artifacts: str) -> list[str]:
    """Names with at least one committed version."""
    names = storage.list_dir(models_root(artifacts))
    return [n for n in names if re.match(NAME_PATTERN, n) and list_versions(artifacts, n)]


def parse_ref(ref: str) -> tuple[str, Optional[int]]:
    """NAME or NAME:VERSION."""
    name, _, version = ref.partition(":")
    if not re.match(NAME_PATTERN, name) or (version and not version.isdigit()):
        raise RegistryError(f"bad model reference {ref!r}: expected NAME or NAME:VERSION (a number)")
    return name, int(version) if version else None


def resolve_version(artifacts: str, ref: str) -> tuple[str, int]:
    """The (name, version) a reference means: the latest committed one when no version is given."""
    name, version = parse_ref(ref)
    versions = list_versions(artifacts, name)
    if not versions:
        raise RegistryError(f"no model named {name!r} in {models_root(artifacts)}")
    if version is None:
        return name, versions[-1]
    if version not in versions:
        raise RegistryError(f"model {name!r} has no version {version}; versions: {', '.join(map(str, versions))}")
    return name, version


def read_manifest(artifacts: str, name: str, version: int) -> dict[str, Any]:
    return storage.read_json(storage.join(version_uri(artifacts, name, version), MANIFEST))


def latest_contract_ref(artifacts: str, name: str, origin: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The data contract of the latest version, as URI and fingerprint.

    None for a new name, and None too when that contract was inferred from exactly this
    `origin` (same data, same fields): inferring again gives the same contract.
    """
    versions = list_versions(artifacts, name)
    if not versions:
        return None
    uri = storage.join(version_uri(artifacts, name, versions[-1]), "contract.json")
    data = storage.read_bytes(uri)
    if origin is not None and json.loads(data).get("origin") == origin:
        return None
    return {"uri": uri, "fingerprint": storage.sha256_bytes(data), "version": versions[-1]}


def find_identical(artifacts: str, name: str, identity: dict[str, str]) -> Optional[int]:
    """A committed version with the same model bytes, data and transform, newest first."""
    for version in reversed(list_versions(artifacts, name)):
        if read_manifest(artifacts, name, version).get("identity") == identity:
            return version
    return None


def publish_version(
    artifacts: str, name: str, files: dict[str, bytes], manifest: dict[str, Any],
    render_card: Optional[Callable[[dict[str, Any]], str]] = None,
) -> tuple[int, str]:
    """Claim the next version number, write the files and manifest, then commit; returns (version, uri)."""
    version = (claimed_versions(artifacts, name) or [0])[-1] + 1
    claim = storage.dumps_json({"claimed_at": now_iso(), "flow_run_id": manifest.get("prefect", {}).get("flow_run_id")})
    while not storage.create_only(storage.join(version_uri(artifacts, name, version), CLAIM), claim):
        version += 1
    folder = version_uri(artifacts, name, version)
    hashes = {}
    for filename, data in sorted(files.items()):
        storage.write_bytes(storage.join(folder, filename), data)
        hashes[filename] = storage.sha256_bytes(data)
    full = {**manifest, "model": name, "version": version, "uri": folder, "files": hashes}
    if render_card is not None:
        storage.write_bytes(storage.join(folder, "model_card.md"), render_card(full).encode())
    storage.write_json(storage.join(folder, MANIFEST), full)
    storage.write_json(storage.join(folder, COMMITTED), {"committed_at": now_iso(), "manifest_sha256":
                       storage.sha256_bytes(storage.dumps_json(full))})
    return version, folder


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def whoami() -> str:
    return os.environ.get("TRAINPIPE_USER") or os.environ.get("USER") or getpass.getuser()


def fmt_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(manifest: dict[str, Any]) -> str:
    """A markdown summary of a version for reviewers (also shown as a Prefect artifact)."""
    rows = "\n".join(
        f"| {k} | {fmt_metric(v)} | {fmt_metric(manifest['baseline_metrics'].get(k))} |"
        for k, v in manifest["metrics"].items()
    )
    top = "\n".join(f"| {r['feature']} | {r['gain_share']:.3f} | {r['splits']} |" for r in manifest["importance_top"])
    data = manifest["data"]
    dropped = "".join(f"\n- dropped `{d['column']}`: {d['reason']}" for d in manifest["features"]["dropped"])
    return f"""# {manifest['model']} v{manifest['version']}

- task: **{manifest['task']}** ({manifest['task_reason']}), target `{manifest['target']}`
- data: {len(data['sources'])} file(s), fingerprint `{data['fingerprint'][:16]}`; rows train/valid/test
  {data['rows']['train']}/{data['rows']['valid']}/{data['rows']['test']} ({data['split_method']} split);
  {data['dropped_null_target']} row(s) dropped for a null target
- model: XGBoost hist, {manifest['training']['best_iteration'] + 1} rounds (early stopping on
  {manifest['training']['validation_metric']}), sha256 `{manifest['model_sha256'][:16]}`
- code: {manifest['code']['git_commit'] or 'no git'}{' (dirty)' if manifest['code']['git_dirty'] else ''},
  source `{manifest['code']['source_sha256'][:16]}`; Prefect run `{manifest['prefect']['flow_run_id']}`{dropped}

## Holdout metrics

| metric | model | trivial baseline |
|---|---|---|
{rows}

## Most important features (share of total gain)

| feature | gain share | splits |
|---|---|---|
{top}
"""


def build_manifest(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any],
) -> dict[str, Any]:
    """Everything a version must answer: data, code, parameters, run, trigger, results."""
    spec_json = spec.model_dump(mode="json")
    return {
        "format": MANIFEST_FORMAT,
        "created_at": now_iso(),
        "created_by": whoami(),
        "task": validated["task"],
        "task_reason": validated["task_reason"],
        "target": spec.target,
        "classes": validated["classes"],
        "model_file": "model.ubj",
        "model_sha256": model["model_sha256"],
        "identity": {"model_sha256": model["model_sha256"], "data": sources["fingerprint"],
                     "transform": matrices["fingerprint"]},
        "data": {
            "fingerprint": sources["fingerprint"],
            "sources": sources["files"],
            "snapshot_uri": snapshot["uri"],
            "rows": parts["rows"],
            "split_method": parts["method"],
            "dropped_null_target": validated["dropped_null_target"],
        },
        "features": {"names": matrices["features"], "dropped": matrices["dropped"]},
        "spec": spec_json,
        "spec_sha256": storage.sha256_bytes(storage.dumps_json(spec_json)),
        "seed": spec.seed,
        "training": {k: model[k] for k in ("params", "rounds_trained", "best_iteration",
                                               "best_validation_score", "validation_metric",
                                               "refit_on_train_and_valid")},
        "tuning": model.get("tuning") or {"trials": spec.tuning.trials, "performed": False},
        "metrics": evaluation["metrics"],
        "baseline_metrics": evaluation["baseline_metrics"],
        "headline_metric": evaluation["headline_metric"],
        "importance_top": evaluation["importance"][:10],
        "code": code_version(),
        "packages": package_versions(),
        "prefect": {
            "flow_run_id": flow_run.id,
            "flow_run_name": flow_run.name,
            "deployment_id": deployment.id,
            "parameters_from": "deployment" if deployment.id else "direct call",
        },
        "stages": stages,
    }


def store_version(
    artifacts: str, name: str, manifest: dict[str, Any], evaluation: dict[str, Any],
    model_uri: str, transform_uri: str, contract_uri: str, report_uri: str,
    attachments: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Publish a version unless an identical one exists; returns version, URI and whether it was reused."""
    existing = find_identical(artifacts, name, manifest["identity"])
    if existing is not None:
        return {"version": existing, "uri": version_uri(artifacts, name, existing), "reused": True}
    files = {
        "model.ubj": storage.read_bytes(model_uri),
        "transform.json": storage.read_bytes(transform_uri),
        "contract.json": storage.read_bytes(contract_uri),
        "validation_report.json": storage.read_bytes(report_uri),
        "metrics.json": storage.dumps_json({k: evaluation[k] for k in ("metrics", "baseline_metrics",
                                                                         "headline_metric", "test_rows")}),
        "feature_importance.json": storage.dumps_json(evaluation["importance"]),
    }
    files.update({filename: storage.read_bytes(uri) for filename, uri in (attachments or {}).items()})
    version, folder = publish_version(artifacts, name, files, manifest, render_card=model_card)
    return {"version": version, "uri": folder, "reused": False}


@task(name="store", **TRANSIENT_RETRIES)
def store_task(
    spec: TrainSpec, sources: dict[str, Any], snapshot: dict[str, Any], validated: dict[str, Any],
    parts: dict[str, Any], matrices: dict[str, Any], model: dict[str, Any], evaluation: dict[str, Any],
    stages: dict[str, Any],
) -> dict[str, Any]:
    started = time.perf_counter()
    artifacts = storage.normalize_root(spec.artifacts)
    manifest = build_manifest(spec, sources, snapshot, validated, parts, matrices, model, evaluation, stages)
    result = store_version(artifacts, spec.name, manifest, evaluation, model["model_uri"],
                           matrices["transform_uri"], validated["contract_uri"], validated["report_uri"],
                           model.get("attachments"))
    card = storage.read_bytes(storage.join(result["uri"], "model_card.md")).decode()
    create_markdown_artifact(key="model-summary", markdown=card, description=f"{spec.name} v{result['version']}")
    return {**result, "seconds": round(time.perf_counter() - started, 3)}


@task(name="find-contract", **TRANSIENT_RETRIES)
def contract_ref_task(
    artifacts: str, name: str, snapshot: dict[str, Any], target: str, task_type: Optional[str],
    id_columns: list[str], drop_columns: list[str],
) -> Optional[dict[str, Any]]:
    """Never cached: a newly published version must be seen by the next run."""
    origin = contract_origin(snapshot["fingerprint"], target, task_type, id_columns, drop_columns)
    return latest_contract_ref(artifacts, name, origin)
