"""Faults on the wire between s3fs and moto's S3 server, through a real TCP proxy (fault_proxy.py).

Transient faults are retried by every stage that touches the store and the run ends with the same model
bytes as a fault-free run; persistent ones fail with a StorageError naming the URI, and nothing is
published (no committed version, no alias, no audit record).

A stage is targeted by the key prefix of its outputs (`<artifacts>/cache/<stage>/…`, see
tasks/common.stage_dir) or of the inputs it reads first. Counts match one call's attempts in
botocore (3 sends, plus a second s3fs try for throttling, resets and broken-off bodies), so each
rule makes exactly one attempt of its stage fail and Prefect's retry (tasks/common.TRANSIENT_RETRIES)
finish it; run counts read back from the Prefect server prove it.

Tuning (`--trials N`) reads the feature matrices for its trials and writes its leaderboard in the tuning
subflow; those reads and writes are retried tasks too (open-tuning, finish-tuning), so a fault there no longer
fails the run, and a tuned run under transient faults ends with the fault-free run's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from fault_proxy import FaultProxy, Rule, fault_proxy
from moto_s3 import moto_s3

from cli.main import main as cli_main
from flows.train import train_flow
from trainpipe import audit, registry, storage
from trainpipe.errors import StorageError
from trainpipe.spec import parse_spec

BUCKET = "trainpipe-faults"
NAME = "penguins"


@pytest.fixture(scope="module")
def proxy(penguins_csv: Path):
    """moto behind the fault proxy; s3fs talks to the proxy. The penguins data is at s3://BUCKET/raw/."""
    import s3fs

    with moto_s3(BUCKET) as endpoint:
        s3fs.S3FileSystem(endpoint_url=endpoint).pipe_file(f"{BUCKET}/raw/penguins.csv", penguins_csv.read_bytes())
        with fault_proxy(int(endpoint.rsplit(":", 1)[1])) as faults:
            patch = pytest.MonkeyPatch()
            patch.setenv("AWS_ENDPOINT_URL_S3", faults.endpoint)
            s3fs.S3FileSystem.clear_instance_cache()
            try:
                yield faults
            finally:
                patch.undo()
                s3fs.S3FileSystem.clear_instance_cache()


def artifacts_for(root: str) -> str:
    return f"s3://{BUCKET}/{root}"


def run_flow(proxy: FaultProxy, root: str, *rules: Rule,
             extra: Optional[dict[str, Any]] = None) -> tuple[Any, dict[str, int]]:
    """Run the training flow (its own artifact root, so nothing is cached) under `rules`;
    returns (the result or the exception it raised, task name -> run count on the Prefect server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    spec = parse_spec({"name": NAME, "data": {"uris": [f"s3://{BUCKET}/raw/"]}, "target": "species", "seed": 7,
                       "artifacts": artifacts_for(root), **(extra or {})})
    proxy.clear()
    proxy.add(*rules)
    try:
        state = train_flow(spec, return_state=True)
        result = state.result(raise_on_failure=False)
        with get_client(sync_client=True) as client:  # the flow run's task runs and its subflows' (tuning)
            ids = [state.state_details.flow_run_id]
            ids += [run.id for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids)))]
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    finally:
        proxy.clear()
    return result, {run.name.rsplit("-", 1)[0]: run.run_count for run in runs}


def published(root: str) -> dict[str, Any]:
    """What the registry shows for NAME under `root`: committed versions, aliases, audit records."""
    artifacts = artifacts_for(root)
    return {"versions": registry.list_versions(artifacts, NAME), "aliases": registry.aliases(artifacts, NAME),
            "audit": audit.read_log(artifacts, NAME)}


@pytest.fixture(scope="module")
def clean_model_sha(proxy) -> str:
    """The model a fault-free run trains."""
    result, counts = run_flow(proxy, "clean")
    assert isinstance(result, dict), result
    assert set(counts.values()) == {1}
    return registry.read_manifest(artifacts_for("clean"), NAME, 1)["model_sha256"]


# (stage whose first attempt must fail, the rule that makes it fail)
GROUPS = {
    "read-ingest-validate": [
        ("fingerprint-sources", Rule("status", "prefix=raw", method="GET", count=3, status=500, code="InternalError")),
        ("ingest", Rule("reset", "/cache/ingest/", method="PUT", count=6)),
        ("validate", Rule("status", "/cache/validate/", method="PUT", count=6, status=503, code="SlowDown")),
    ],
    "split-features-train-evaluate": [
        ("split", Rule("status", "/cache/split/", method="PUT", count=3, status=500, code="InternalError")),
        ("features", Rule("truncate", "/cache/split/", method="GET", count=2)),
        ("train", Rule("truncate", "/cache/features/", method="GET", count=2)),
        ("evaluate", Rule("reset", "/cache/evaluate/", method="PUT", count=6)),
    ],
    "gate-store": [
        ("gate", Rule("truncate", "/cache/evaluate/", method="GET", count=2)),
        ("store", Rule("status", "/versions/1/manifest.json", method="PUT", count=6, status=503, code="SlowDown")),
    ],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_transient_faults_are_retried_and_give_the_same_model(proxy, clean_model_sha, group):
    rules = [rule for _, rule in GROUPS[group]]
    if group == "gate-store":
        rules += [Rule("latency", "/cache/", method="GET", count=1000, seconds=0.05)]  # slow reads everywhere
    result, counts = run_flow(proxy, group, *rules)

    assert isinstance(result, dict), result
    for stage, rule in GROUPS[group]:
        assert rule.hits == rule.count, (stage, rule)
        assert counts[stage] == 2, (stage, counts)  # failed once on the wire, retried, succeeded
    # A retried store claims the next number: the first attempt's claim of version 1 was never committed
    # and stays invisible (list_versions shows committed versions only).
    version = result["version"]
    assert version == (2 if group == "gate-store" else 1)
    assert registry.read_manifest(artifacts_for(group), NAME, version)["model_sha256"] == clean_model_sha
    state = published(group)
    assert state["versions"] == [version] and state["aliases"] == {"champion": version}
    assert [r["event"] for r in state["audit"]].count("version_published") == 1
    assert registry.verify_registry(artifacts_for(group), NAME) == []


def test_lost_responses_to_create_only_writes_do_not_duplicate_versions_or_audit_records(proxy):
    """The registry relies on create-only PUTs (If-None-Match: *) for version claims and audit records. When
    the store applies one but its answer is lost, botocore sends it again and meets 412: that must read as
    "this writer's own object", not as a rival's (which would claim version 2 or log the event twice)."""
    claim = Rule("drop_response", "/versions/1/_CLAIM", method="PUT", count=1)
    record = Rule("drop_response", f"/audit/{NAME}/00000001.json", method="PUT", count=1)
    result, _ = run_flow(proxy, "lost-answers", claim, record)

    assert isinstance(result, dict), result
    assert claim.hits == 1 and record.hits == 1
    assert result["version"] == 1
    state = published("lost-answers")
    assert state["versions"] == [1] and registry.claimed_versions(artifacts_for("lost-answers"), NAME) == [1]
    events = [r["event"] for r in state["audit"]]
    assert events.count("version_published") == 1 and events.count("gate_verdict") == 1
    assert registry.verify_registry(artifacts_for("lost-answers"), NAME) == []


def test_a_store_that_keeps_failing_fails_the_run_after_bounded_retries(proxy):
    broken = Rule("reset", "/cache/features/", method="PUT", count=10_000)
    result, counts = run_flow(proxy, "always-down", broken)

    assert isinstance(result, StorageError) and result.transient
    assert f"s3://{BUCKET}/always-down/cache/features/" in str(result) and proxy.endpoint in str(result)
    assert counts["features"] == 4  # the first try and 3 retries
    assert broken.hits == 4 * 6  # each try: 3 sends by botocore, twice by s3fs
    assert "train" not in counts
    assert published("always-down") == {"versions": [], "aliases": {}, "audit": []}


def test_refused_access_fails_at_once_and_publishes_nothing(proxy):
    denied = Rule("status", "/versions/1/_COMMITTED", method="PUT", count=10_000, status=403, code="AccessDenied")
    result, counts = run_flow(proxy, "denied", denied)

    assert isinstance(result, StorageError) and not result.transient
    assert f"s3://{BUCKET}/denied/models/{NAME}/versions/1/_COMMITTED" in str(result)
    assert f"bucket '{BUCKET}'" in str(result) and "permission" in str(result)
    assert denied.hits == 1 and counts["store"] == 1  # not retried
    # the files written before the refused commit stay invisible: no version, no alias, no audit record
    assert published("denied") == {"versions": [], "aliases": {}, "audit": []}


def cli_train(root: str, capfd) -> tuple[int, list[str]]:
    code = cli_main(["train", "--data", f"s3://{BUCKET}/raw/", "--target", "species", "--name", NAME,
                     "--artifacts", artifacts_for(root)])
    err = capfd.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def test_cli_without_permission_on_the_data_bucket_prints_one_line(proxy, capfd):
    proxy.add(Rule("status", "prefix=raw", method="GET", count=10_000, status=403, code="AccessDenied"))
    try:
        code, lines = cli_train("cli-denied", capfd)
    finally:
        proxy.clear()
    assert code == 8
    assert not any("Traceback" in line for line in lines)
    errors = [line for line in lines if line.startswith("trainpipe: error:")]
    assert len(errors) == 1
    assert f"s3://{BUCKET}/raw/" in errors[0] and f"bucket '{BUCKET}'" in errors[0] and "permission" in errors[0]
    assert published("cli-denied") == {"versions": [], "aliases": {}, "audit": []}


def test_cli_with_an_unreachable_endpoint_prints_one_line(proxy, capfd, monkeypatch):
    import s3fs

    from moto_s3 import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        code, lines = cli_train("cli-unreachable", capfd)
    finally:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        s3fs.S3FileSystem.clear_instance_cache()
    assert code == 8
    assert not any("Traceback" in line for line in lines)
    errors = [line for line in lines if line.startswith("trainpipe: error:")]
    assert len(errors) == 1
    assert f"s3://{BUCKET}/raw/" in errors[0] and dead in errors[0] and "unavailable" in errors[0]
    assert published("cli-unreachable") == {"versions": [], "aliases": {}, "audit": []}


# --- faults while tuning (`--trials N`): the trials' matrices are read from the store ---------------------------

TUNING = {"trials": 3, "parallelism": 1}
XGB = {"num_boost_round": 40, "early_stopping_rounds": 5}


def run_tuned(proxy: FaultProxy, root: str, *rules: Rule) -> tuple[Any, dict[str, int]]:
    return run_flow(proxy, root, *rules, extra={"tuning": TUNING, "xgboost": XGB})


@pytest.fixture(scope="module")
def clean_tuned_sha(proxy) -> str:
    """The model a fault-free tuned run ends with."""
    result, _ = run_tuned(proxy, "tuned-clean")
    assert isinstance(result, dict), result
    manifest = registry.read_manifest(artifacts_for("tuned-clean"), NAME, 1)
    assert manifest["tuning"]["performed"] and manifest["tuning"]["trials_asked"] == 3
    return manifest["model_sha256"]


# (stage whose first attempt must fail, the rule that makes it fail); the tuning run's own writes (leaderboard,
# picture, marker) go under /cache/tune/
TUNING_FAULTS = {
    "slowdown": [("open-tuning", Rule("status", "/cache/features/", method="GET", count=6, status=503,
                                      code="SlowDown"))],
    "reset": [("open-tuning", Rule("reset", "/cache/features/", method="GET", count=6)),
              ("finish-tuning", Rule("reset", "/cache/tune/", method="PUT", count=6))],
    "truncated-body": [("open-tuning", Rule("truncate", "/cache/features/", method="GET", count=2))],
}


@pytest.mark.parametrize("case", list(TUNING_FAULTS))
def test_transient_faults_while_tuning_are_retried_and_give_the_same_model(proxy, clean_tuned_sha, case):
    """The first reads of the feature matrices after the features stage are the tuning run's (the train stage
    reads them after the study): one failed read is retried and the study and the refit end the same."""
    root = f"tuned-{case}"
    result, counts = run_tuned(proxy, root, *(rule for _, rule in TUNING_FAULTS[case]))

    assert isinstance(result, dict), result
    for stage, rule in TUNING_FAULTS[case]:
        assert rule.hits == rule.count, (stage, rule)
        assert counts[stage] == 2, (stage, counts)  # failed once on the wire, retried, succeeded
    assert counts["train"] == 1 and counts["features"] == 1, counts
    manifest = registry.read_manifest(artifacts_for(root), NAME, result["version"])
    assert manifest["model_sha256"] == clean_tuned_sha
    assert manifest["tuning"]["counts"]["complete"] + manifest["tuning"]["counts"]["pruned"] == 3
    assert registry.verify_registry(artifacts_for(root), NAME) == []


def test_cli_tuning_with_a_store_that_keeps_failing_fails_cleanly(proxy, capfd):
    """Every read of the matrices fails: the tuning run gives up after its bounded retries, the CLI prints one
    line naming the matrices' URI and exits non-zero, and nothing is published."""
    broken = Rule("reset", "/cache/features/", method="GET", count=10_000)
    proxy.clear()
    proxy.add(broken)
    try:
        code = cli_main(["train", "--data", f"s3://{BUCKET}/raw/", "--target", "species", "--name", NAME,
                         "--artifacts", artifacts_for("tuned-down"), "--trials", "3"])
    finally:
        proxy.clear()
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 8, lines[-20:]
    assert not any("Traceback" in line for line in lines)
    errors = [line for line in lines if line.startswith("trainpipe: error:")]
    assert len(errors) == 1, lines[-20:]
    assert f"s3://{BUCKET}/tuned-down/cache/features/" in errors[0] and "unavailable" in errors[0], errors
    assert broken.hits == 4 * 6, broken.hits  # the first try and 3 retries, each 3 sends twice
    assert published("tuned-down") == {"versions": [], "aliases": {}, "audit": []}


# --- the store stage after its version claim ---------------------------------------------------------------

# (the rule, the version the retried store ends with, whether version 1's claim is left abandoned)
AFTER_CLAIM = {
    # a file write fails after `_CLAIM` of v1 exists: v1 is marked abandoned, the retry claims and commits v2
    "file-write": (Rule("reset", "/versions/1/model.ubj", method="PUT", count=6), 2, True),
    # the commit marker lands but no answer ever comes back (12 sends of one call, each applied): the retry
    # finds v1 committed and completes it
    "commit-unanswered": (Rule("drop_response", "/versions/1/_COMMITTED", method="PUT", count=12), 1, False),
    # committed, then the audit record's write fails: the retry appends the record to v1
    "audit-record": (Rule("reset", f"/audit/{NAME}/00000001.json", method="PUT", count=6), 1, False),
}


def audit_verify(root: str, capfd) -> tuple[int, str]:
    """`trainpipe audit verify NAME`: exit code and what it printed."""
    code = cli_main(["audit", "verify", NAME, "--artifacts", artifacts_for(root)])
    out = capfd.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("case", list(AFTER_CLAIM))
def test_a_store_retried_after_its_claim_commits_exactly_one_version(proxy, clean_model_sha, case, capfd):
    rule, version, abandoned = AFTER_CLAIM[case]
    root = f"after-claim-{case}"
    result, counts = run_flow(proxy, root, rule)

    assert isinstance(result, dict), result
    assert rule.hits == rule.count and counts["store"] == 2, (rule, counts)
    assert result["version"] == version
    state = published(root)
    assert state["versions"] == [version] and state["aliases"] == {"champion": version}
    assert registry.read_manifest(artifacts_for(root), NAME, version)["model_sha256"] == clean_model_sha
    published_records = [r for r in state["audit"] if r["event"] == "version_published"]
    assert [r["version"] for r in published_records] == [version]
    v1 = registry.version_uri(artifacts_for(root), NAME, 1)
    assert storage.exists(storage.join(v1, registry.ABANDONED)) == abandoned
    if abandoned:  # the failed attempt's claim says why it was given up and never becomes visible
        assert "model.ubj" in storage.read_json(storage.join(v1, registry.ABANDONED))["why"]
        assert not storage.exists(storage.join(v1, registry.COMMITTED))
    assert registry.verify_registry(artifacts_for(root), NAME) == []
    code, said = audit_verify(root, capfd)
    assert code == 0 and "audit log intact" in said, said


def test_a_store_that_keeps_failing_after_its_claims_commits_nothing(proxy, capfd):
    broken = Rule("reset", "/model_card.md", method="PUT", count=10_000)  # every version's card (store only)
    result, counts = run_flow(proxy, "after-claim-down", broken)

    assert isinstance(result, StorageError) and result.transient
    assert counts["store"] == 4 and broken.hits == 4 * 6, (counts, broken.hits)
    artifacts = artifacts_for("after-claim-down")
    assert f"{artifacts}/models/{NAME}/versions/4/model_card.md" in str(result) and "unavailable" in str(result)
    # each attempt claimed a number and marked it abandoned; none is committed, nothing was logged
    assert registry.claimed_versions(artifacts, NAME) == [1, 2, 3, 4]
    for version in (1, 2, 3, 4):
        assert storage.exists(storage.join(registry.version_uri(artifacts, NAME, version), registry.ABANDONED))
    assert published("after-claim-down") == {"versions": [], "aliases": {}, "audit": []}
    assert registry.verify_registry(artifacts, NAME) == []
    code, said = audit_verify("after-claim-down", capfd)
    assert code == 5 and f"no audit log or model named {NAME!r}" in said, said  # nothing was ever published
