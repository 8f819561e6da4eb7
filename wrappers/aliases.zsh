# capguard aliases for zsh: every aider and Claude Code session runs under capguard and its caps.
# Add to ~/.zshrc:   . /path/to/capguard/wrappers/aliases.zsh
# With capguard-team on your PATH the aliases use it (the team's config, ledger and monthly caps).
if command -v capguard-team >/dev/null 2>&1; then
  alias aider='capguard-team aider'
  alias claude='capguard-team claude'
else
  alias aider='capguard aider'
  alias claude='capguard claude'
fi
