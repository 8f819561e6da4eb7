"""aider: its launch plan (adapter.py) and the parsers of its analytics log and LLM history (logs.py)."""
