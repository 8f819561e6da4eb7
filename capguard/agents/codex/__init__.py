"""Codex CLI (npm @openai/codex): its rollout files and how capguard runs it."""
