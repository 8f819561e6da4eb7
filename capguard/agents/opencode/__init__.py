"""OpenCode (npm `opencode-ai`): metered from its SQLite store."""
