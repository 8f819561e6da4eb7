"""Claude Code: its launch plan (adapter.py), transcript and statusLine parsers (logs.py), telemetry (otel*.py).

Kept empty: `python -m capguard.agents.claude.statusline` runs on every status refresh and must start fast.
"""
