"""`capguard report` and `capguard suggest`: spend, runs and cap suggestions from the ledger.

`aggregate.py` and `suggest.py` are pure (plain rows in, figures out); `query.py` reads the ledger; `render.py`
makes tables that fit 80 columns, CSV and JSON.
"""
