"""Test-wide environment: an isolated Prefect home, no telemetry, the bundled dataset."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before Prefect is imported anywhere, so every test process uses a throwaway home.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="trainpipe-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A loaded CI box can take longer than the default 20 s to bring up the ephemeral server some tests use.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("TRAINPIPE_ARTIFACTS", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PENGUINS = ROOT / "data" / "penguins.csv"


@pytest.fixture(scope="session")
def penguins_csv() -> Path:
    return PENGUINS
