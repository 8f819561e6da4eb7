"""AWS Signature Version 4, checked as AWS checks it, written from AWS's documentation ("Create a signed AWS API
request") and independent of botocore, which capguard signs with: a fake that bills only signed requests proves the
proxy's signatures are AWS's, not merely botocore's agreement with itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)  # AWS refuses a request signed further from its clock than this


@dataclass(frozen=True)
class Keys:
    """The credentials and scope a fake server accepts."""

    access_key: str
    secret_key: str
    region: str
    service: str
    session_token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_uri(raw_path: str) -> str:
    """Each segment URI-encoded once more (AWS's rule for every service but S3): the path as it came, encoded."""
    return quote(raw_path or "/", safe="/~")


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def check(
    keys: Keys, method: str, target: str, headers: Mapping[str, str], body: bytes, now: datetime | None = None
) -> str | None:
    """None when the request carries a valid signature by `keys` for its scope; else why not (as AWS would
    answer 403). `target`: the request line's path and query, as received; `headers`: every header received."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if not auth.startswith(ALGORITHM + " "):
        return "Missing Authentication Token"
    fields = dict(part.strip().split("=", 1) for part in auth[len(ALGORITHM) + 1 :].split(",") if "=" in part)
    credential, signed, signature = (
        fields.get("Credential", ""),
        fields.get("SignedHeaders", ""),
        fields.get("Signature"),
    )
    scope = credential.split("/")
    if len(scope) != 5 or scope[0] != keys.access_key:
        return "The security token included in the request is invalid."
    day, region, service, terminal = scope[1:]
    if (region, service, terminal) != (keys.region, keys.service, "aws4_request"):
        return f"Credential should be scoped to a valid region and service: {region}/{service}"
    stamp = lower.get("x-amz-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "X-Amz-Date is missing or malformed"
    if stamp[:8] != day:
        return "Date in Credential scope does not match YYYYMMDD from X-Amz-Date"
    if abs((now or datetime.now(timezone.utc)) - when) > MAX_SKEW:
        return "Signature expired"
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names or names != sorted(names):
        return "SignedHeaders must include host and x-amz-date, sorted"
    if keys.session_token is not None and (
        lower.get("x-amz-security-token") != keys.session_token or "x-amz-security-token" not in names
    ):
        return "The security token included in the request is invalid."
    if any(name not in lower for name in names):
        return "A signed header is missing"
    path, _, query = target.partition("?")
    canonical = "\n".join(
        [
            method,
            _canonical_uri(path),
            _canonical_query(query),
            "".join(f"{name}:{' '.join(lower[name].split())}\n" for name in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = "\n".join([ALGORITHM, stamp, "/".join(scope[1:]), hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + keys.secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if signature is None or not hmac.compare_digest(signature, expected):
        return "The request signature we calculated does not match the signature you provided."
    return None
