"""Errors that name what is at fault; the CLI prints them and exits non-zero."""


class TrainpipeError(Exception):
    """Base for failures with a message meant for the user."""

    exit_code = 1


class SpecError(TrainpipeError):
    """A spec, CLI option or parameter is invalid."""

    exit_code = 2


class DataError(TrainpipeError):
    """Input data cannot be read or lacks what the spec asks for."""

    exit_code = 3


class NoDataFiles(DataError):
    """A reachable location holds no data files (yet)."""


class OutsideDataRoots(DataError):
    """A data URI outside the roots a worker allows (TRAINPIPE_DATA_ROOTS); nothing was read."""


class ContractViolation(TrainpipeError):
    """Data breaks the model's data contract; the report says where."""

    exit_code = 4

    def __init__(self, message: str, report_uri: str | None = None):
        super().__init__(message)
        self.report_uri = report_uri


class RegistryError(TrainpipeError):
    """A model or version is missing or unreadable in the artifact store."""

    exit_code = 5


class TuningError(TrainpipeError):
    """Hyperparameter tuning could not produce a usable trial, or its storage is unusable."""

    exit_code = 6


class IntegrityError(TrainpipeError):
    """The audit trail does not verify, or a version could not be reproduced."""

    exit_code = 7


class StorageError(TrainpipeError):
    """The data or artifact store cannot be reached, keeps failing, or refuses access.

    `transient` says whether trying again may help (connection trouble, throttling, 5xx);
    stages retry those, and the CLI reports the last one once retries are spent.
    """

    exit_code = 8

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class OrchestratorError(TrainpipeError):
    """The Prefect API cannot be reached (after the client's retries)."""

    exit_code = 9
