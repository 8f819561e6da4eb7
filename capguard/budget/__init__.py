"""Budgets beyond one run: the month's allowance against the ledger, and the library's `Budget` for own loops.

`capguard.Budget` (library.py) is imported lazily from capguard/__init__.py, so the CLI never loads it.
"""
