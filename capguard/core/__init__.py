"""The pure core: units, prices, usage, cap decisions, sanitizing and trust rules, stop reasons.

Nothing here touches a file, a process, a socket, a clock or a database; everything is tested without them.
"""
