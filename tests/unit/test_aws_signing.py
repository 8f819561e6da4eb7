"""Strict mode signing for AWS (Signature Version 4) for Claude Code on Bedrock, Mantle or Claude Platform on AWS
with AWS credentials: the signer (botocore's chain and signer) checked against a verifier written apart from it
(tests/fakes/sigv4.py, itself checked against AWS's published example), and Claude Code's fronts that use it."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import pytest

from capguard.agents.claude.adapter import strict_fronts as claude_fronts
from capguard.core.errors import ConfigError
from capguard.metering.proxy.aws_signing import AwsSigner, AwsSigning, SigningUnavailable
from tests.fakes import sigv4
from tests.unit.test_claude_on_clouds import dirs  # noqa: F401  (the fixture: a repo and Claude's folder)

ACCESS = "AKIDCAPGUARDUNIT0001"
SECRET = "unit/Secret+Key/0123456789abcdefghijklmnop"
TOKEN = "IQoJb3JpZ2luX2VjEunit-session-token"
BODY = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[]}'
# a versioned Bedrock id: its colon is encoded once on the wire and once more in the signature's canonical path
URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
TARGET = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
HOST = {"Host": "bedrock-runtime.us-east-1.amazonaws.com"}


def signer(**env: str) -> AwsSigner:
    signing = AwsSigner(AwsSigning("bedrock", "us-east-1", env))
    signing.load()
    return signing


def signed(signing: AwsSigner, headers: dict[str, str] | None = None, body: bytes = BODY) -> dict[str, str]:
    base = {"Content-Type": "application/json", "anthropic-beta": "x", **(headers or {})}
    return signing.sign(signing.credentials(), "POST", URL, base, body)


def test_the_verifier_accepts_awss_published_example_and_nothing_else():
    """AWS's SigV4 test suite, get-vanilla: the fakes check signatures as AWS does, not as botocore does."""
    keys = sigv4.Keys("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service")
    headers = {
        "Host": "example.amazonaws.com",
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    }
    at = datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc)
    assert sigv4.check(keys, "GET", "/", headers, b"", now=at) is None
    assert sigv4.check(keys, "GET", "/?a=b", headers, b"", now=at) is not None
    assert sigv4.check(keys, "GET", "/", headers, b"", now=datetime(2015, 8, 31, tzinfo=timezone.utc)) is not None


def test_keys_in_the_environment_sign_what_aws_accepts_and_only_that():
    headers = signed(signer(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN))
    keys = sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock", TOKEN)
    assert headers["X-Amz-Security-Token"] == TOKEN and headers["anthropic-beta"] == "x"
    assert sigv4.check(keys, "POST", TARGET, {**headers, **HOST}, BODY) is None
    # a byte of the body, the host, the path, the scope: AWS would refuse each
    assert sigv4.check(keys, "POST", TARGET, {**headers, **HOST}, BODY + b" ") is not None
    assert sigv4.check(keys, "POST", TARGET, {**headers, "Host": "127.0.0.1:8080"}, BODY) is not None
    assert sigv4.check(keys, "POST", TARGET.replace("invoke", "invoke-with-response-stream"), {**headers, **HOST}, BODY)
    for scope in (("us-west-2", "bedrock"), ("us-east-1", "bedrock-mantle")):
        assert sigv4.check(sigv4.Keys(ACCESS, SECRET, *scope, TOKEN), "POST", TARGET, {**headers, **HOST}, BODY)


def test_the_agents_own_signature_is_never_passed_on():
    theirs = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDAGENT/...", "X-Amz-Date": "20200101T000000Z",
              "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}  # fmt: skip
    headers = signed(signer(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET), theirs)
    assert "AKIDAGENT" not in json.dumps(headers) and "X-Amz-Content-Sha256" not in headers
    assert (
        sigv4.check(sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock"), "POST", TARGET, {**headers, **HOST}, BODY)
        is None
    )


def test_a_profile_in_a_shared_credentials_file_is_the_one_signed_with(tmp_path):
    shared = tmp_path / "credentials"
    shared.write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n"
        f"[work]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"
    )
    headers = signed(signer(AWS_SHARED_CREDENTIALS_FILE=str(shared), AWS_PROFILE="work"))
    assert (
        sigv4.check(sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock"), "POST", TARGET, {**headers, **HOST}, BODY)
        is None
    )
    headers = signed(signer(AWS_SHARED_CREDENTIALS_FILE=str(shared)))  # no profile named: the default one
    assert "Credential=AKIDDEFAULT/" in headers["Authorization"]


def test_no_credentials_half_credentials_and_no_botocore_each_say_why(tmp_path, monkeypatch):
    with pytest.raises(SigningUnavailable, match="no AWS credentials were found by the AWS SDK's chain"):
        signer()
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id = AKIDHALF\n")
    with pytest.raises(SigningUnavailable, match="could not be loaded: PartialCredentialsError") as caught:
        signer(AWS_SHARED_CREDENTIALS_FILE=str(shared))
    assert "\n" not in str(caught.value)
    with pytest.raises(SigningUnavailable, match="could not be loaded: ProfileNotFound"):
        signer(AWS_SHARED_CREDENTIALS_FILE=str(shared), AWS_PROFILE="missing")
    monkeypatch.setitem(sys.modules, "botocore", None)  # not installed
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    with pytest.raises(
        SigningUnavailable, match=r"needs botocore \(pip install botocore, or capguard's \[aws\] extra\)"
    ):
        signer(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)


def test_the_signer_never_shows_its_credentials():
    signing = signer(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN)
    shown = repr(signing.how) + repr(signing) + str(signing.__dict__.get("how"))
    assert SECRET not in shown and TOKEN not in shown


# ---- Claude Code's fronts: signed by the proxy when Claude Code would sign


KEYS = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest.mark.parametrize(
    ("switch", "skip", "service", "upstream"),
    [
        ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_SKIP_BEDROCK_AUTH", "bedrock",
         "https://bedrock-runtime.eu-west-1.amazonaws.com"),
        ("CLAUDE_CODE_USE_MANTLE", "CLAUDE_CODE_SKIP_MANTLE_AUTH", "bedrock-mantle",
         "https://bedrock-mantle.eu-west-1.api.aws/anthropic"),
        ("CLAUDE_CODE_USE_ANTHROPIC_AWS", "CLAUDE_CODE_SKIP_ANTHROPIC_AWS_AUTH", "aws-external-anthropic",
         "https://aws-external-anthropic.eu-west-1.api.aws"),
    ],
)  # fmt: skip
def test_claude_code_with_aws_credentials_is_told_to_sign_nothing_and_the_proxy_signs(
    dirs, switch, skip, service, upstream
):
    cwd, home = dirs
    (front,) = claude_fronts([], {switch: "1", "AWS_REGION": "eu-west-1", **KEYS}, cwd, home)
    assert front.upstream == upstream and front.child_env == ((skip, "1"),)
    assert front.signer is not None and (front.signer.how.service, front.signer.how.region) == (service, "eu-west-1")
    assert SECRET not in repr(front)
    # with an API key, or the user's own gateway that signs, nothing is signed by the proxy
    keyed = {switch: "1", "AWS_REGION": "eu-west-1", "AWS_BEARER_TOKEN_BEDROCK": "k", "ANTHROPIC_AWS_API_KEY": "k"}
    assert claude_fronts([], keyed, cwd, home)[0].signer is None
    assert claude_fronts([], {switch: "1", "AWS_REGION": "eu-west-1", skip: "1"}, cwd, home)[0].signer is None


def test_the_credentials_claude_codes_settings_name_are_the_ones_signed_with(dirs, tmp_path):
    cwd, home = dirs
    shared = tmp_path / "credentials"
    shared.write_text(f"[team]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n")
    (home / "settings.json").write_text(
        json.dumps({"env": {"AWS_PROFILE": "team", "AWS_SHARED_CREDENTIALS_FILE": str(shared)}})
    )
    (front,) = claude_fronts([], {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "us-east-1"}, cwd, home)
    assert front.signer is not None
    assert f"Credential={ACCESS}/" in signed(front.signer)["Authorization"]


@pytest.mark.parametrize(
    ("settings", "env", "why"),
    [
        ({"env": {"CLAUDE_CODE_SKIP_BEDROCK_AUTH": "0"}}, KEYS, "CLAUDE_CODE_SKIP_BEDROCK_AUTH is set in"),
        ({"awsCredentialExport": "/usr/local/bin/creds"}, KEYS, "awsCredentialExport in .* cannot read"),
        ({}, {}, "the proxy signs for AWS: no AWS credentials were found"),
        ({}, {**KEYS, "AWS_REGION": "", "ANTHROPIC_BEDROCK_BASE_URL": "https://gw.example"},
         "no AWS_REGION is set for the proxy to sign Amazon Bedrock's requests in"),
    ],
)  # fmt: skip
def test_what_the_proxy_cannot_sign_for_is_refused_at_start(dirs, settings, env, why):
    cwd, home = dirs
    (home / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=f"{why}.*--meter files"):
        claude_fronts([], {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "us-east-1", **env}, cwd, home)


def credential_process(tmp_path, access: str = ACCESS) -> dict[str, str]:
    """A profile whose credentials come from a command (temporary ones, with an expiry): the chain's way for SSO
    helpers and vaults; botocore refreshes them when they are about to expire."""
    answer = {"Version": 1, "AccessKeyId": access, "SecretAccessKey": SECRET, "SessionToken": TOKEN,
              "Expiration": "2099-01-01T00:00:00Z"}  # fmt: skip
    script = tmp_path / "creds.py"
    script.write_text(f"import json\nprint(json.dumps({answer!r}))\n")
    config = tmp_path / "config"
    config.write_text(f"[profile vault]\ncredential_process = {sys.executable} {script}\n")
    return {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "vault"}


def test_credentials_from_a_process_are_temporary_and_signed_with_their_token(tmp_path):
    signing = signer(**credential_process(tmp_path))
    assert signing.may_refresh  # the proxy fetches them off its event loop
    headers = signed(signing)
    keys = sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock", TOKEN)
    assert sigv4.check(keys, "POST", TARGET, {**headers, **HOST}, BODY) is None
    assert not signer(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET).may_refresh  # keys as they are
