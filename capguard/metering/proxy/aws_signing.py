"""Signing the proxy's requests to AWS (Signature Version 4) for an agent that signs with AWS credentials.

An agent on Bedrock, Mantle or Claude Platform on AWS without an API key signs each request for the host it sends
to: the proxy's, whose signature AWS would refuse. In strict mode the proxy drops that signature (Claude Code is told
to send none, its CLAUDE_CODE_SKIP_*_AUTH as for a gateway; aider's litellm and OpenCode sign anyway) and signs each
request for the provider's host with the credentials the AWS SDK's own chain finds: keys in the environment, the
shared files and a profile, SSO, credential_process, container and instance roles (the chain the agents' SDKs
follow). botocore (the optional [aws] extra) finds them, refreshes them and signs: no hand-written SigV4.

The credentials stay in this process: never logged, never in a report, the ledger or an error's text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capguard.core import sanitize

# The variables of the AWS SDK's chain an agent's settings may set over the environment (Claude's `env` tables)
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
# Headers of the agent's own signing (none is expected, the agent is told to sign nothing): never passed on
SIGNING_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
_INSTALL = "pip install botocore, or capguard's [aws] extra"


class SigningUnavailable(Exception):
    """No request can be signed: no botocore, no credentials, or credentials that cannot be refreshed. The text is
    one line for the user, without any secret."""


@dataclass(frozen=True)
class AwsSigning:
    """How a front's requests are signed: the service's signing name (Bedrock's is `bedrock`, Mantle's
    `bedrock-mantle`, Claude Platform on AWS's `aws-external-anthropic`), the region, and the chain's variables as
    the agent would see them (its settings over the environment)."""

    service: str
    region: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


class AwsSigner:
    """One front's signer. `load()` at start finds the credentials (SigningUnavailable: why not); `credentials()`
    gives them for a request, refreshed when they are about to expire (it may call AWS: off the event loop);
    `sign()` is pure CPU."""

    def __init__(self, how: AwsSigning) -> None:
        self.how = how
        self._source: Any = None

    def load(self) -> None:
        try:
            import botocore.session  # noqa: F401  (what _session builds: its absence is said here, in one line)
            from botocore.credentials import Credentials
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise SigningUnavailable(f"signing with AWS credentials needs botocore ({_INSTALL})") from None
        env = self.how.env
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:  # the chain's first link, as the agent's environment holds it
            self._source = Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
            return
        session = _session(env)
        try:
            source = session.get_credentials()
            frozen = None if source is None else source.get_frozen_credentials()
        except (BotoCoreError, ValueError, OSError) as err:
            raise SigningUnavailable(f"the AWS credentials could not be loaded: {_said(err)}") from None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            profile = env.get("AWS_PROFILE")
            where = f" (profile {sanitize.printable(profile[:60])!r})" if profile else ""
            raise SigningUnavailable(f"no AWS credentials were found{where} by the AWS SDK's chain")
        self._source = source

    @property
    def may_refresh(self) -> bool:
        """The credentials can expire and be refreshed (SSO, a role, a process...): fetching them may call AWS.
        Keys given as they are never do, so they are fetched on the event loop without a thread hop."""
        from botocore.credentials import RefreshableCredentials

        return isinstance(self._source, RefreshableCredentials)

    def credentials(self) -> Any:
        """The credentials for one request (botocore's ReadOnlyCredentials), refreshed if due."""
        if self._source is None:
            raise SigningUnavailable("the AWS credentials were never loaded")
        from botocore.exceptions import BotoCoreError

        try:
            frozen = self._source.get_frozen_credentials()
        except (BotoCoreError, ValueError, OSError) as err:
            raise SigningUnavailable(f"the AWS credentials could not be refreshed: {_said(err)}") from None
        if not frozen.access_key or not frozen.secret_key:
            raise SigningUnavailable("the AWS credentials expired and gave no new ones")
        return frozen

    def sign(self, credentials: Any, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """`headers` with the signature's: Authorization, X-Amz-Date and, for temporary credentials,
        X-Amz-Security-Token. Signed: the host (from `url`, exactly as it is sent), the content type, the date, the
        token and the body's hash; the agent's other headers go unsigned, as AWS allows."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        kept = {k: v for k, v in headers.items() if k.lower() not in SIGNING_HEADERS}
        signed = {k: v for k, v in kept.items() if k.lower() == "content-type"}
        request = AWSRequest(method=method, url=url, data=body, headers=signed)
        SigV4Auth(credentials, self.how.service, self.how.region).add_auth(request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = request.headers.get(name)
            if value is not None:
                kept[name] = value
        return kept


# An AWS region's name, as the SDKs check it (it goes into a host name)
_REGION = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d{1,2}$")


def is_region(name: object) -> bool:
    return isinstance(name, str) and bool(_REGION.match(name))


def bedrock_runtime(region: str) -> str:
    """Bedrock's runtime endpoint in a region, as the AWS SDKs build it (GovCloud's is the FIPS one)."""
    return f"https://bedrock-runtime{'-fips' if region.startswith('us-gov-') else ''}.{region}.amazonaws.com"


def _session(env: Mapping[str, str]) -> Any:
    """A botocore session reading the profile and the files the chain's variables in `env` name."""
    import botocore.session

    session = botocore.session.Session()
    for name, variable in (("profile", "AWS_PROFILE"), ("credentials_file", "AWS_SHARED_CREDENTIALS_FILE"),
                           ("config_file", "AWS_CONFIG_FILE")):  # fmt: skip
        if env.get(variable):
            session.set_config_variable(name, env[variable])
    return session


def profile_region(chain: Mapping[str, str]) -> str | None:
    """The region the AWS SDK's config gives the chain's profile, or None (no botocore, none set, a config file
    that cannot be read)."""
    try:
        found = _session(chain).get_config_variable("region")
    except Exception:  # no botocore, or a malformed config file: no region from it
        return None
    return found if isinstance(found, str) else None


def chain_in(env: Mapping[str, str]) -> dict[str, str]:
    """The AWS SDK chain's variables set in `env`."""
    return {name: env[name] for name in CREDENTIAL_VARIABLES if env.get(name)}


def loaded(service: str, region: str, chain: Mapping[str, str]) -> AwsSigner:
    """A signer whose credentials are found now (SigningUnavailable: why none can be)."""
    signer = AwsSigner(AwsSigning(service, region, dict(chain)))
    signer.load()
    return signer


_SECRETISH = re.compile(r"(?i)(secret|token|key)\S*\s*[:=]\s*\S+")


def _said(err: BaseException) -> str:
    """botocore's message, one line, anything that looks like a secret's value cut out."""
    text = _SECRETISH.sub(r"\1=...", " ".join(str(err).split()))
    return f"{type(err).__name__}: {sanitize.printable(text[:200])}"
