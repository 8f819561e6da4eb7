"""The subcommands other than running an agent: config, status, ledger."""
