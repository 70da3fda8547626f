"""prefect.yaml on a real stack: a Prefect server on loopback (on a throwaway PostgreSQL database),
pools from `trainpipe infra setup`, `prefect deploy --all`, one process worker per pool, data and
artifact store on moto's S3 server.

This machine has no GPU: the dispatch test runs the `gpu` pool's deployment with the run's
environment overriding the pool's TRAINPIPE_XGBOOST_DEVICE=cuda, and checks separately that
without the override the pool's setting reaches XGBoost (the run fails, it never falls back).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deploy_stack import BUCKET, LANDING, STORE, Stack, deployment_stack, finished, flow_runs, wait_for

from tasks.watch import listing, read_state
from tasks.watch import poll as watch_poll
from trainpipe import registry, storage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with deployment_stack(tmp_path_factory.mktemp("deploy")) as built:
        with temporary_settings(updates={PREFECT_API_URL: built.api_url}):
            yield built


@pytest.fixture()
def client(stack: Stack):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as sync_client:
        yield sync_client


def run_and_wait(name: str, parameters: dict[str, Any] | None = None, timeout: float = 240) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=1)


def test_setup_is_idempotent_and_pools_carry_the_gpu_settings(stack: Stack, client):
    first, second = stack.setup_reports
    assert first["pools"] == {"cpu": "created", "gpu": "created", "dask": "created"}
    assert first["concurrency_limits"] == {"gpu": "created"}
    assert first["queues"]["cpu"]["retrain"] == "created"
    assert set(second["pools"].values()) == {"unchanged"}
    assert second["queues"] == {"cpu": {"default": "unchanged", "retrain": "unchanged"},
                                "gpu": {"default": "unchanged"}, "dask": {"default": "unchanged"}}
    assert second["concurrency_limits"] == {"gpu": "unchanged"}
    gpu_env = client.read_work_pool("gpu").base_job_template["variables"]["properties"]["env"]["default"]
    assert gpu_env["TRAINPIPE_XGBOOST_DEVICE"] == "cuda"
    assert gpu_env["TRAINPIPE_CONCURRENCY_LIMIT"] == "gpu"
    assert client.read_global_concurrency_limit_by_name("gpu").limit == 1
    dask_env = client.read_work_pool("dask").base_job_template["variables"]["properties"]["env"]["default"]
    assert {"TRAINPIPE_DASK_ADDRESS", "TRAINPIPE_DATA_ROOTS"} <= set(dask_env)
    names = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
    assert {"trainpipe-train/train-cpu", "trainpipe-train/train-gpu", "trainpipe-fit/fit-gpu",
            "trainpipe-fit/fit-cpu", "trainpipe-fit/fit-dask", "trainpipe-watch/watch-penguins", "trainpipe-train/retrain-penguins"} <= names


def test_training_deployment_publishes_a_version(stack: Stack, client):
    run = run_and_wait("trainpipe-train/train-cpu")

    assert run.state.is_completed(), run.state
    assert run.work_pool_name == "cpu"
    versions = registry.list_versions(STORE, "penguins-species")
    assert versions, "no committed version in the artifact store"
    manifest = registry.read_manifest(STORE, "penguins-species", versions[-1])
    assert manifest["prefect"]["flow_run_id"] == str(run.id)
    assert manifest["data"]["sources"][0]["uri"].endswith("data/penguins.csv")
    assert f"Worker 'worker-cpu' submitting flow run '{run.id}'" in stack.log("worker-cpu")


def upload(frame: pl.DataFrame, name: str) -> None:
    fs, _ = storage.get_fs(LANDING)
    fs.pipe_file(f"{BUCKET}/landing/penguins/{name}", frame.write_csv().encode())


def poll(client) -> dict[str, Any]:
    run = run_and_wait("trainpipe-watch/watch-penguins")
    assert run.state.is_completed(), run.state
    return read_state(STORE, "penguins")


def test_new_data_in_the_bucket_triggers_one_retrain(stack: Stack, client, penguins_csv: Path):
    frame = pl.read_csv(penguins_csv, null_values="NA")
    before = registry.list_versions(STORE, "penguins-species")
    upload(frame.slice(0, 120), "part-0.csv")
    upload(frame.slice(120, 120), "part-1.csv")
    first = poll(client)
    upload(frame.slice(240), "part-2.csv")  # the burst goes on after the first poll
    landed = dt.datetime.now(dt.UTC)
    second = poll(client)
    third = poll(client)
    fingerprint = listing(LANDING)["fingerprint"]

    assert first["emitted"] == {} and first["listing"] != fingerprint  # seen, still settling
    assert second["listing"] == fingerprint and second["emitted"] == {}  # changed since: settling again
    assert list(third["emitted"]) == [fingerprint]  # unchanged for a poll: one event
    event_id = third["emitted"][fingerprint]["event_id"]

    retrain = wait_for(lambda: flow_runs(client, "trainpipe-train/retrain-penguins"), 60, "the triggered run")
    assert len(retrain) == 1
    done = wait_for(lambda: finished(client, retrain[0].id), 240, "the retrain to finish")
    assert done.state.is_completed(), done.state
    trigger = done.parameters["trigger"]
    assert trigger["id"] == event_id and trigger["fingerprint"] == fingerprint
    assert trigger["uri"] == LANDING and trigger["dataset"] == "penguins"
    assert done.work_pool_name == "cpu" and done.work_queue_name == "retrain"
    assert f"Worker 'worker-cpu' submitting flow run '{done.id}'" in stack.log("worker-cpu")

    versions = registry.list_versions(STORE, "penguins-species")
    assert len(versions) == len(before) + 1
    manifest = registry.read_manifest(STORE, "penguins-species", versions[-1])
    assert manifest["data"]["fingerprint"] == fingerprint
    assert [s["uri"] for s in manifest["data"]["sources"]] == [f"{LANDING}part-{i}.csv" for i in range(3)]
    assert manifest["prefect"]["flow_run_id"] == str(done.id)

    occurred = dt.datetime.fromisoformat(trigger["occurred"])
    running = done.start_time
    print(f"\nlatency: event -> retrain run created {(retrain[0].created - occurred).total_seconds():.1f} s; "
          f"event -> retrain running {(running - occurred).total_seconds():.1f} s; "
          f"last upload -> running {(running - landed).total_seconds():.1f} s (polls run back to back); "
          f"event -> new version committed {(done.end_time - occurred).total_seconds():.1f} s")

    # The same data again: already trained, so no second event (the poll would send it here).
    again = watch_poll(LANDING, "penguins", "penguins-species", STORE, retry_after_seconds=0)
    assert again["action"] == "trained" and again["trained_version"] == versions[-1]
    assert read_state(STORE, "penguins")["emitted"] == third["emitted"]
    notified = stack.run(sys.executable, "-m", "trainpipe", "notify", LANDING, "--dataset", "penguins",
                         "--model", "penguins-species", "--json")
    assert json.loads(notified.stdout) == {"emitted": False, "trained_version": versions[-1]}


def test_notify_emits_the_same_event(stack: Stack, client):
    import httpx

    storage.write_bytes(f"s3://{BUCKET}/adhoc/batch.csv", b"x,y\n1,2\n")
    done = stack.run(sys.executable, "-m", "trainpipe", "notify", f"s3://{BUCKET}/adhoc/", "--json")
    out = json.loads(done.stdout)
    assert out["emitted"] and out["dataset"] == "adhoc" and out["files"] == 1
    query = {"filter": {"event": {"name": ["trainpipe.data.arrived"]},
                        "resource": {"id": ["trainpipe.dataset.adhoc"]}}}

    def stored() -> list[dict[str, Any]]:
        return httpx.post(f"{stack.api_url}/events/filter", json=query, timeout=10).json()["events"]

    events = wait_for(stored, 30, "the notify event on the server")
    assert [e["id"] for e in events] == [out["event_id"]]
    assert events[0]["payload"]["fingerprint"] == out["fingerprint"]
    assert events[0]["payload"]["uri"] == f"s3://{BUCKET}/adhoc/" and events[0]["payload"]["source"] == "notify"
    missing = subprocess.run([sys.executable, "-m", "trainpipe", "notify", f"s3://{BUCKET}/nothing-here/"],
                             env=stack.env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 3 and "no data files" in missing.stderr


def dispatch_spec(name: str, env: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "data": {"uris": ["data/penguins.csv"]}, "target": "species",
            "compute": {"train_pool": "gpu", "env": env}}


def test_training_part_runs_on_the_gpu_pool_holding_a_slot_and_never_falls_back(stack: Stack, client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    # Left to the gpu pool's own env (cuda), the run must fail on this GPU-less machine; started first,
    # it runs beside the next one, whose run-level env overrides the device so that it can train here.
    cuda = run_and_wait("trainpipe-train/train-gpu", {"spec": dispatch_spec("penguins-cuda", {})}, timeout=0)
    run = run_and_wait("trainpipe-train/train-gpu",
                       {"spec": dispatch_spec("penguins-dispatch", {"TRAINPIPE_XGBOOST_DEVICE": "cpu"})})

    assert run.state.is_completed(), run.state
    assert run.work_pool_name == "cpu"
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    assert len(children) == 1
    fit = children[0]
    assert fit.work_pool_name == "gpu" and fit.state.is_completed()
    assert client.read_deployment(fit.deployment_id).name == "fit-gpu"
    assert f"Worker 'worker-gpu' submitting flow run '{fit.id}'" in stack.log("worker-gpu")
    assert f"submitting flow run '{fit.id}'" not in stack.log("worker-cpu")
    result = storage.read_json(f"{STORE}/runs/fit/{fit.id}.json")
    assert result["concurrency"] == {"limit": "gpu", "slots": 1, "active_slots": 1}  # held while training
    version = registry.list_versions(STORE, "penguins-dispatch")[-1]
    manifest = registry.read_manifest(STORE, "penguins-dispatch", version)
    assert manifest["training"]["params"]["device"] == "cpu"
    assert manifest["model_sha256"] == result["model"]["model_sha256"]

    failed = wait_for(lambda: finished(client, cuda.id), 240, "the cuda run to finish")
    assert failed.state.is_failed(), failed.state
    assert "training on pool 'gpu'" in failed.state.message and "Failed" in failed.state.message
    assert "TRAINPIPE_XGBOOST_DEVICE=cuda (from this worker's pool or job) but no CUDA device" in \
        stack.log("worker-gpu")
    assert registry.list_versions(STORE, "penguins-cuda") == []
    assert client.read_global_concurrency_limit_by_name("gpu").active_slots == 0  # every slot released

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture()
def browser():
    import os

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{', '.join(missing)} missing under CI: .ci/run installs Debian's chromium, chromium-driver")
        pytest.skip(f"headless Chromium not installed ({', '.join(missing)}): apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_custom_run_form_starts_a_run_that_completes(stack: Stack, client, browser, penguins_csv: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    data_uri = f"s3://{BUCKET}/ui/penguins.csv"
    storage.write_bytes(data_uri, penguins_csv.read_bytes())
    deployment = client.read_deployment_by_name("trainpipe-train/train-cpu")
    wait = WebDriverWait(browser, 90)
    browser.get(f"{stack.ui_url}/deployments/deployment/{deployment.id}/run")

    def field(label: str) -> Any:
        """The text box under a form field's label (the spec's titles, as the UI shows them)."""
        xpath = f"//*[normalize-space(text())='{label}']/following::textarea[1]"
        return wait.until(lambda driver: driver.find_element(By.XPATH, xpath))

    assert field("Target").get_attribute("value") == "species"  # the deployment's defaults fill the form
    assert "Where the training data lives" in browser.page_source  # field descriptions are shown
    def fill(label: str, value: str) -> str:
        """Type into a field; the form may re-render a box while it validates the last edit, so a box that
        lost what was typed is found again and typed into once more (at most five times: a fresh-clone CI run
        on a quiet box once saw three tries in a row lose the Target field's text)."""
        for _ in range(5):
            box = field(label)
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.DELETE)
            box.send_keys(value)
            try:
                WebDriverWait(browser, 5).until(lambda driver: field(label).get_attribute("value") == value)
                break
            except TimeoutException:
                continue
        return field(label).get_attribute("value")

    entries = (("Name", "penguins-island"), ("Data URIs", data_uri), ("Target", "island"))
    for label, value in entries:
        assert fill(label, value) == value
    assert [field(label).get_attribute("value") for label, _ in entries] == [v for _, v in entries]
    browser.find_element(By.XPATH, "//button[@type='submit'][contains(normalize-space(.), 'Submit')]").click()

    def from_form() -> list[Any]:
        return [r for r in flow_runs(client, "trainpipe-train/train-cpu")
                if r.parameters["spec"].get("name") == "penguins-island"]

    try:
        created = wait_for(from_form, 60, "the run submitted from the form")
    except AssertionError as error:
        console = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        raise AssertionError(f"{error}; browser console errors: {console}") from None
    assert len(created) == 1
    run_id = str(created[0].id)
    done = wait_for(lambda: finished(client, run_id), 240, "the run started from the form")
    assert done.state.is_completed(), done.state
    spec = done.parameters["spec"]
    assert spec["data"]["uris"] == [data_uri] and spec["target"] == "island" and spec["name"] == "penguins-island"
    manifest = registry.read_manifest(STORE, "penguins-island", registry.list_versions(STORE, "penguins-island")[-1])
    assert manifest["target"] == "island" and manifest["prefect"]["flow_run_id"] == run_id
    browser.get(f"{stack.ui_url}/runs/flow-run/{run_id}")
    try:
        wait.until(lambda driver: "Completed" in driver.find_element(By.TAG_NAME, "body").text)
    finally:
        browser.save_screenshot(str(stack.logs / "run-page.png"))
