"""Transient I/O errors are retried by Prefect with the stages' retry policy; bad data is not."""

from __future__ import annotations

import pytest
from prefect import flow, task

from tasks.common import TRANSIENT_RETRIES
from trainpipe.errors import DataError


def flaky(error: BaseException, failures: int):
    calls = []

    @task(**{**TRANSIENT_RETRIES, "retry_delay_seconds": 0})
    def stage() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return len(calls)

    @flow
    def run() -> int:
        return stage()

    return run, calls


def test_transient_errors_are_retried_until_success():
    run, calls = flaky(ConnectionResetError("connection reset by peer"), failures=2)
    assert run() == 3
    assert len(calls) == 3


def test_retries_are_bounded():
    run, calls = flaky(TimeoutError("read timed out"), failures=10)
    with pytest.raises(TimeoutError):
        run()
    assert len(calls) == 1 + TRANSIENT_RETRIES["retries"]


@pytest.mark.parametrize("error", [DataError("bad.csv: missing column x"), FileNotFoundError("gone.csv")])
def test_deterministic_failures_fail_fast(error):
    run, calls = flaky(error, failures=10)
    with pytest.raises(type(error)):
        run()
    assert len(calls) == 1
