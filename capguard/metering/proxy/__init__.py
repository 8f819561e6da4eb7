"""Strict mode's meter: an HTTP proxy between the agent and its model provider that holds each request's worst
case before it goes, lowers its output limit to fit the budget or refuses it, and settles the exact usage after.

`MeteringProxy` serves; `Gate` is its budget (cap, settled spend, holds) and emits `Reply` and `Refused` events.
"""

from capguard.metering.proxy.gate import Admission, Gate, Refused
from capguard.metering.proxy.server import MeteringProxy

__all__ = ["Admission", "Gate", "MeteringProxy", "Refused"]
