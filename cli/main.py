"""The `trainpipe` command: train, predict, models list/show/promote/rollback, audit verify/log, reproduce,
infra setup, notify.

Exit codes: 0 success, 1 unexpected failure, 2 bad spec or option, 3 unreadable or
unsuitable data, 4 data-contract violation, 5 missing model or version, 6 tuning
produced no usable trial, 7 audit log does not verify or a version was not reproduced, 8 the data or
artifact store cannot be reached (after retries) or refuses access, 9 the Prefect API cannot be reached (after
the client's retries).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from cli import handlers
from cli.parser import build_parser
from trainpipe.errors import TrainpipeError

HANDLERS = {
    "train": handlers.cmd_train,
    "predict": handlers.cmd_predict,
    "models": handlers.cmd_models,
    "audit": handlers.cmd_audit,
    "reproduce": handlers.cmd_reproduce,
    "infra": handlers.cmd_infra,
    "notify": handlers.cmd_notify,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except TrainpipeError as error:
        print(f"trainpipe: error: {error}", file=sys.stderr)
        return error.exit_code
    except PermissionError as error:
        print(f"trainpipe: error: no permission: {error.filename or error}", file=sys.stderr)
        return 1
    except Exception as error:
        failure = _api_failure(error) or _store_failure(error)
        if failure is None:
            raise
        print(f"trainpipe: error: {failure}", file=sys.stderr)
        return failure.exit_code
    except KeyboardInterrupt:
        print("trainpipe: interrupted", file=sys.stderr)
        return 130


def _api_failure(error: BaseException) -> Optional[TrainpipeError]:
    """A request to the Prefect API that failed for good (the client's retries spent), as one line; None else."""
    import httpx

    from trainpipe.errors import OrchestratorError

    if not isinstance(error, httpx.TransportError):
        return None
    try:
        url = str(error.request.url)
    except RuntimeError:  # no request attached: not one of the API client's
        return None
    from prefect.settings import PREFECT_API_URL

    api = (PREFECT_API_URL.value() or "").rstrip("/")
    if not api or not url.startswith(api):
        return None
    return OrchestratorError(
        f"the Prefect API at {api} cannot be reached ({type(error).__name__}: {error}) after the client's retries "
        "(PREFECT_CLIENT_MAX_RETRIES): what the run finished is kept (cached stages, committed versions); start "
        "the server again and run the same command")


def _store_failure(error: BaseException) -> Optional[TrainpipeError]:
    """A store failure that reached the CLI untranslated (no URI known), as one line; None for anything else."""
    from trainpipe import storage
    from trainpipe.errors import StorageError

    kind = storage.classify_error(error)
    if kind not in ("transient", "denied", "credentials"):
        return None
    what = "no permission" if kind == "denied" else "no credentials" if kind == "credentials" else "storage unavailable"
    return StorageError(f"{what}: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}")


if __name__ == "__main__":
    sys.exit(main())
