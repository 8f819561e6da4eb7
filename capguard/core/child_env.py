"""What the agent's environment may not carry: capguard's own secrets (sudo's env_reset, for one process tree).

Pure: the launch plan's environment in, the same minus the ledger's password and any capguard variable holding one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# libpq's password and password file: capguard's ledger reads them, the agent has no use for them.
SECRETS = frozenset({"PGPASSWORD", "PGPASSFILE"})
# A URL with a password in it (scheme://user:password@host), e.g. a ledger DSN.
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@|\bpassword\s*=", re.IGNORECASE)
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET)", re.IGNORECASE)


def is_capguard_secret(name: str, value: str) -> bool:
    """Whether `name=value` is one of capguard's secrets rather than something the agent needs."""
    if name in SECRETS:
        return True
    if not name.startswith("CAPGUARD_"):
        return False
    return bool(_SECRET_NAME.search(name) or _URL_PASSWORD.search(value))


def for_agent(env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: everything it was given except capguard's secrets. The agent's own keys
    (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...), HOME, PATH, the OTel variables capguard sets, stay."""
    return {name: value for name, value in env.items() if not is_capguard_secret(name, value)}


LOOPBACK = "127.0.0.1"


def local_hop_direct(env: Mapping[str, str], host: str = LOOPBACK) -> dict[str, str]:
    """NO_PROXY and no_proxy with capguard's own host added (its metering proxy, its OTel receiver): an
    HTTP(S)_PROXY of the user's would otherwise take the agent's requests for 127.0.0.1 to that proxy (httpx,
    Node's and Rust's clients exempt no host by default), where they fail, or are read with the run's secret. Each
    name gets the union of both (clients read one or the other; Python prefers the lower-case one)."""
    hosts: list[str] = []
    for name in ("no_proxy", "NO_PROXY"):
        hosts += [h.strip() for h in env.get(name, "").split(",") if h.strip()]
    if "*" in hosts:
        return {}
    merged = ",".join(dict.fromkeys([*hosts, host]))
    return {"NO_PROXY": merged, "no_proxy": merged}
