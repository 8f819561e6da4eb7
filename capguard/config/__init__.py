"""Settings: the layered config files (trusted or not, team locks), the environment, the flags; who and where.

`settings` parses once into typed sections (a frozen dataclass each) with their provenance; `trust` is the store
of trusted repo files.
"""
