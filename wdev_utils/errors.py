"""User-facing error types: each message says what was wrong and what to do."""


class WdevError(Exception):
    """Base class for errors the command line reports without a traceback."""


class DatasetError(WdevError):
    """A data set is unknown, missing, corrupt or cannot be fetched."""


class ConfigError(WdevError):
    """A run configuration or notebook parameter is invalid."""


class StoreError(WdevError):
    """The run store lacks a run or holds one that cannot be read."""
