"""Budgets around model SDKs: `anthropic_wrap` wraps the anthropic clients (imported only when you wrap one).

`anthropic_usage` and `streams` never import an SDK themselves.
"""
