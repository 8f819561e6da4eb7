"""The importers' fast pricer lives in capguard.core.unit_prices (the metering proxy prices with it too)."""

from capguard.core.unit_prices import UnitPricer

__all__ = ["UnitPricer"]
