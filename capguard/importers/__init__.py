"""`capguard import`: brings agents' existing logs (Claude Code transcripts, aider histories) into the ledger.

Idempotent (the live meter's dedupe keys) and incremental (per-file offsets in a state file of the data dir).
"""
