"""Typed errors, turned into one-line messages and exit codes by the CLI only.

Each carries the exit code a user's script sees (2 for usage and config errors).
"""

from __future__ import annotations


class CapguardError(Exception):
    """A failure that the CLI reports as `capguard: error: <message>`."""

    exit_code = 2


class ConfigError(CapguardError):
    """A bad flag, environment variable or config file value."""


class LedgerError(CapguardError):
    """The ledger cannot be opened or written; the agent is not started uncapped."""

    exit_code = 3


class DataDirError(LedgerError):
    """capguard's data folder (CAPGUARD_HOME, else XDG_DATA_HOME/capguard) cannot be created or written."""


class AgentNotFound(CapguardError):
    """The agent's executable is not on PATH."""

    exit_code = 127


class AgentNotExecutable(CapguardError):
    """The agent's executable exists but cannot be run."""

    exit_code = 126


class MonthlyCapReached(CapguardError):
    """A monthly budget is spent: a new run is refused until the month resets or an ack."""

    exit_code = 117


class UnpricedModel(CapguardError):
    """The model named on the command line has no known price under a USD cap and unpriced = "stop"."""

    exit_code = 116


class ProxyUnavailable(CapguardError):
    """Strict mode: the metering proxy could not start (no port on 127.0.0.1), so the agent is not started."""

    exit_code = 115  # as meter_error: capguard cannot count
