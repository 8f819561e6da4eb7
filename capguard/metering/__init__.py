"""Metering from the agent's files and telemetry: tailing (survives truncation), watching, blind-meter checks.

What a line means is each agent's parser's business (capguard.agents); this package only delivers lines, once.
"""
