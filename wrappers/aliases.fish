# capguard aliases for fish: every aider and Claude Code session runs under capguard and its caps.
# Add to ~/.config/fish/config.fish:   source /path/to/capguard/wrappers/aliases.fish
# With capguard-team on your PATH the aliases use it (the team's config, ledger and monthly caps).
if type -q capguard-team
    alias aider 'capguard-team aider'
    alias claude 'capguard-team claude'
else
    alias aider 'capguard aider'
    alias claude 'capguard claude'
end
