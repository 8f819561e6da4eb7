"""Gemini CLI (npm `@google/gemini-cli`): its adapter and the parser of its session files."""
