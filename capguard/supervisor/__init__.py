"""One agent's process tree: spawn it on our terminal, run the loop, stop the whole tree (cgroup or freeze-sweep).

The cap decisions come from capguard.core; the ledger and the month are injected as hooks.
"""
