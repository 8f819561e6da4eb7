"""Claude Code on AWS and Google Cloud, pure parts: Bedrock's model ids priced as Anthropic's models, Mantle's
routes and request facts (its regional premium, no task budget), the Gate settling a Mantle call, Claude Code's
fronts for Claude in Amazon Bedrock (Mantle), Claude Platform on AWS and Claude on Google Cloud (Anthropic
managed), the refusals where capguard cannot front or price them, the provider Claude Code picks when several are
set, and the files meter's premium on Mantle."""

from __future__ import annotations

import json

import pytest

from capguard.agents.claude.adapter import chosen_provider
from capguard.agents.claude.adapter import strict_fronts as claude_fronts
from capguard.agents.claude.cloud_premium import CloudPremium, with_premium
from capguard.core.errors import ConfigError
from capguard.core.events import Reply
from capguard.core.pricing import BEDROCK_REGIONAL, Pricer, bedrock_model
from capguard.metering.proxy.dialects import ANTHROPIC, MANTLE, ask, error_body, route
from capguard.metering.proxy.gate import Admission, Gate
from capguard.metering.proxy.usage import Tracker

KEY = {"AWS_BEARER_TOKEN_BEDROCK": "ABSK-test"}
MANTLE_ON = {"CLAUDE_CODE_USE_MANTLE": "1", "AWS_REGION": "us-east-1", **KEY}
AWS_ON = {"CLAUDE_CODE_USE_ANTHROPIC_AWS": "1", "AWS_REGION": "eu-west-1", "ANTHROPIC_AWS_API_KEY": "k"}


@pytest.fixture
def dirs(tmp_path):
    cwd, home = tmp_path / "repo", tmp_path / ".claude"
    cwd.mkdir()
    home.mkdir()
    return cwd, home


# ---- Bedrock's model ids


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("anthropic.claude-opus-4-7", "claude-opus-4-7"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("claude-opus-4-7", "claude-opus-4-7"),  # Anthropic's own name: as it is
        ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),  # not Anthropic's: as it is, priced by nobody
        ("arn:aws:bedrock:us-east-1:1:application-inference-profile/x", "arn:aws:bedrock:us-east-1:1:application-inference-profile/x"),
    ],
)  # fmt: skip
def test_bedrock_ids_name_anthropics_models(model, name):
    assert bedrock_model(model) == name


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("global.anthropic.claude-opus-5-5", 1.0),  # a global profile: Anthropic's rates
        ("us.anthropic.claude-opus-5-5", 1.1),  # a geographic profile: the regional 10%
        ("anthropic.claude-opus-5-5", 1.1),  # in-region (and Mantle's ids): the same
        ("anthropic/anthropic.claude-opus-5-5", 1.1),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", 1.0),  # before Sonnet 4.5: no premium anywhere
    ],
)
def test_a_bedrock_id_is_priced_as_anthropics_model_at_the_premium_its_endpoint_pays(model, factor):
    """The id says the endpoint, so any reader of a transcript (the files meter, `capguard import`) prices it
    right; a reply already priced at a premium (the files meter's wrapper) gets it once."""
    pricer = Pricer()
    ours = pricer.price(Reply("k", model, input_tokens=1000, output_tokens=200))
    base = pricer.price(Reply("k", bedrock_model(model.split("/")[-1]), input_tokens=1000, output_tokens=200))
    assert ours.priced_by == "genai-prices" and base.cost_micro
    assert ours.cost_micro == round(base.cost_micro * factor)
    wrapped = Reply("k", model, input_tokens=1000, output_tokens=200, details={"inference_geo": BEDROCK_REGIONAL})
    assert pricer.price(wrapped).cost_micro == round(base.cost_micro * 1.1)
    assert not pricer.can_price("amazon.nova-pro-v1:0")


# ---- the proxy on Mantle


def test_mantles_routes_are_the_messages_apis_with_its_platform():
    metered = route("POST", "v1/messages", MANTLE)
    assert (metered.dialect, metered.platform, metered.why) == (ANTHROPIC, MANTLE, None)
    assert route("POST", "v1/messages/count_tokens", MANTLE).free
    assert route("POST", "v1/complete", MANTLE).why
    assert route("POST", "v1/messages", ANTHROPIC).platform is None


@pytest.mark.parametrize(
    ("model", "geo"),
    [
        ("anthropic.claude-opus-5-5", BEDROCK_REGIONAL),
        ("anthropic.claude-haiku-4-5", BEDROCK_REGIONAL),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", None),  # before Sonnet 4.5: no premium
    ],
)
def test_a_mantle_request_is_anthropics_model_at_the_regional_premium(model, geo):
    body = {"model": model, "max_tokens": 100, "inference_geo": "us", "messages": []}
    facts = ask(ANTHROPIC, body, platform=MANTLE)
    assert facts.model == bedrock_model(model) and facts.geo == geo and facts.platform == MANTLE
    assert ask(ANTHROPIC, body).geo == "us"  # on Anthropic's API the request says it


def test_mantles_refusals_are_in_anthropics_format():
    assert json.loads(error_body(MANTLE, "no"))["error"] == {"type": "invalid_request_error", "message": "no"}


def _settled_on_mantle(gate: Gate, model: str = "anthropic.claude-opus-5-5") -> Reply:
    body = {"model": model, "max_tokens": 1000, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    admission = gate.admit(ANTHROPIC, body, provider="anthropic", platform=MANTLE)
    assert isinstance(admission, Admission) and admission.model == "anthropic/claude-opus-5-5"
    assert admission.task is None  # no task budget on Mantle (unknown there)
    tracker = Tracker(ANTHROPIC)
    tracker.see({"type": "message_start", "message": {"id": "msg_bdrk_1", "model": model,
                 "usage": {"input_tokens": 1000, "output_tokens": 1}}})  # fmt: skip
    tracker.see({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}})
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None
    return reply


def test_the_gate_settles_a_mantle_call_at_the_regional_premium():
    gate = Gate(Pricer(), cap_micro=1_000_000, task_budget=50_000)
    reply = _settled_on_mantle(gate)
    assert reply.details["inference_geo"] == BEDROCK_REGIONAL and reply.details["charged"] == "usage"
    assert gate.spent_micro == round((1000 * 4 + 200 * 20) * 1.1) == Pricer().price(reply).cost_micro


# ---- Claude Code's fronts


def test_mantle_with_a_bedrock_api_key_is_fronted_at_its_base_url(dirs):
    cwd, home = dirs
    (front,) = claude_fronts([], MANTLE_ON, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env, front.provider) == (
        "mantle", "https://bedrock-mantle.us-east-1.api.aws/anthropic", MANTLE,
        ("ANTHROPIC_BEDROCK_MANTLE_BASE_URL",), "anthropic",
    )  # fmt: skip
    gateway = {**MANTLE_ON, "ANTHROPIC_BEDROCK_MANTLE_BASE_URL": "https://gw.example/anthropic"}
    assert claude_fronts([], gateway, cwd, home)[0].upstream == "https://gw.example/anthropic"
    # a gateway of the user's that signs: Claude Code sends no credentials, the proxy passes none
    skip = {"CLAUDE_CODE_USE_MANTLE": "1", "CLAUDE_CODE_SKIP_MANTLE_AUTH": "1", "AWS_DEFAULT_REGION": "eu-west-3"}
    assert claude_fronts([], skip, cwd, home)[0].upstream == "https://bedrock-mantle.eu-west-3.api.aws/anthropic"


def test_claude_platform_on_aws_with_an_api_key_is_fronted(dirs):
    cwd, home = dirs
    (front,) = claude_fronts([], AWS_ON, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env, front.provider) == (
        "anthropic-aws", "https://aws-external-anthropic.eu-west-1.api.aws", ANTHROPIC,
        ("ANTHROPIC_AWS_BASE_URL",), "anthropic",
    )  # fmt: skip


def test_keys_and_regions_in_claudes_settings_count(dirs):
    cwd, home = dirs
    (home / "settings.json").write_text(json.dumps({"env": {**MANTLE_ON, "AWS_REGION": "ap-northeast-1"}}))
    (front,) = claude_fronts([], {"AWS_REGION": "us-east-1"}, cwd, home)  # the settings' region wins
    assert front.upstream == "https://bedrock-mantle.ap-northeast-1.api.aws/anthropic"


@pytest.mark.parametrize(
    ("env", "why"),
    [
        (
            {"CLAUDE_CODE_USE_MANTLE": "1", "AWS_REGION": "us-east-1"},
            "without an API key .AWS_BEARER_TOKEN_BEDROCK.*no AWS cred",
        ),
        ({**AWS_ON, "ANTHROPIC_AWS_API_KEY": ""}, "without an API key .ANTHROPIC_AWS_API_KEY.*no AWS cred"),
        ({"CLAUDE_CODE_USE_MANTLE": "1", **KEY}, "no AWS_REGION is set"),
        ({**MANTLE_ON, "AWS_REGION": "us-east-1.evil.example/x"}, "is no AWS region"),
        ({**MANTLE_ON, "ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION": "us-west-2"}, "second region"),
        ({**MANTLE_ON, "ANTHROPIC_BEDROCK_MANTLE_BASE_URL": "ftp://x"}, "is not an http"),
    ],
)
def test_what_strict_mode_cannot_front_on_aws_is_refused_in_one_line(dirs, env, why):
    cwd, home = dirs
    with pytest.raises(ConfigError, match=f"{why}.*--meter files"):
        claude_fronts([], env, cwd, home)


def test_a_base_url_in_claudes_settings_over_capguards_is_refused(dirs):
    cwd, home = dirs
    (cwd / ".claude").mkdir()
    (cwd / ".claude" / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_AWS_BASE_URL": "https://x"}}))
    with pytest.raises(ConfigError, match="ANTHROPIC_AWS_BASE_URL is set in .*settings.json"):
        claude_fronts([], AWS_ON, cwd, home)


def test_the_provider_is_the_one_claude_code_picks(dirs):
    cwd, home = dirs
    both = {**MANTLE_ON, "CLAUDE_CODE_USE_VERTEX": "1"}
    assert claude_fronts([], both, cwd, home)[0].mount == "mantle"  # Claude Code picks Mantle over Vertex
    # Bedrock's InvokeModel over both, and Foundry over Mantle (its refusal, without a resource, is Foundry's)
    assert claude_fronts([], {**both, "CLAUDE_CODE_USE_BEDROCK": "1"}, cwd, home)[0].mount == "bedrock"
    with pytest.raises(ConfigError, match="no ANTHROPIC_FOUNDRY_RESOURCE is set"):
        claude_fronts([], {**MANTLE_ON, "CLAUDE_CODE_USE_FOUNDRY": "1"}, cwd, home)
    # Claude Code applies its settings over its environment: a switch turned off there is off
    (home / "settings.json").write_text(json.dumps({"env": {"CLAUDE_CODE_USE_MANTLE": "0"}}))
    assert claude_fronts([], MANTLE_ON, cwd, home)[0].mount == "anthropic"
    assert chosen_provider([("environment", MANTLE_ON), ("user", {"CLAUDE_CODE_USE_MANTLE": "0"})]) is None


# ---- the files meter on Mantle


def test_the_files_meter_prices_mantle_replies_at_the_regional_premium():
    class Lines:
        def feed(self, line: bytes, offset: int) -> list:
            return [
                Reply("a", "anthropic.claude-opus-5-5", input_tokens=1000, output_tokens=200),
                Reply("b", "anthropic.claude-opus-5-5", input_tokens=1, output_tokens=1, reported_cost_micro=1000),
                Reply("c", "us.anthropic.claude-sonnet-4-20250514-v1:0", input_tokens=1000, output_tokens=200),
            ]

    wrapped = with_premium(MANTLE)(Lines())
    assert isinstance(wrapped, CloudPremium)
    ours, claudes, old = wrapped.feed(b"", 0)
    assert ours.details["inference_geo"] == BEDROCK_REGIONAL
    assert Pricer().price(ours).cost_micro == round((1000 * 4 + 200 * 20) * 1.1)
    assert claudes.reported_cost_micro == 1100  # Claude Code's own figure leaves the premium out
    assert old.details == {}  # Sonnet 4: no premium


@pytest.mark.parametrize(
    ("cloud", "name"),
    [
        ("CLAUDE_CODE_USE_VERTEX", "Vertex AI"),
        ("CLAUDE_CODE_USE_BEDROCK", "Amazon Bedrock"),
        ("CLAUDE_CODE_USE_FOUNDRY", None),  # Claude Code sends one there: so does the proxy, nothing to say
        (None, None),
    ],
)
def test_a_task_budget_on_a_cloud_says_none_is_sent(tmp_path, monkeypatch, cloud, name):
    """Claude Code 2.1.330 sends no task budget on Vertex, Bedrock or Mantle (`claude -p --task-budget`, measured),
    and the proxy adds none there: the run says so instead of leaving the user to think one holds."""
    from capguard.agents.claude.adapter import ClaudeAdapter
    from capguard.config.settings import load_settings

    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text("[agents.claude]\ntask_budget = 50000\n")
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "cc")}
    if cloud:
        env[cloud] = "1"
    monkeypatch.chdir(tmp_path)
    plan = ClaudeAdapter().plan([], load_settings("claude", env={}, files=[config]), tmp_path, env, "r1")
    said = [note for note in plan.notes if note.startswith("task budget")]
    assert said == ([f"task budget: Claude Code sends none on {name}, and nor does capguard"] if name else [])


# ---- Claude on Google Cloud (Anthropic managed): the Claude API at claude.googleapis.com

GCP_ON = {
    "CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD": "1",
    "ANTHROPIC_GOOGLE_CLOUD_PROJECT": "my-project-123",
    "ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID": "wrkspc_01AbC",
}


def test_claude_on_google_cloud_is_fronted_at_the_url_anthropics_sdk_builds(dirs):
    cwd, home = dirs
    (front,) = claude_fronts([], GCP_ON, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env, front.provider) == (
        "anthropic-gcp",
        "https://claude.googleapis.com/v1/projects/my-project-123/locations/global/workspaces/wrkspc_01AbC/invoke",
        ANTHROPIC, ("ANTHROPIC_GOOGLE_CLOUD_BASE_URL",), "anthropic",
    )  # fmt: skip
    project = {**GCP_ON, "ANTHROPIC_GOOGLE_CLOUD_PROJECT": "", "GOOGLE_CLOUD_PROJECT": "other-project"}
    assert "/projects/other-project/" in claude_fronts([], project, cwd, home)[0].upstream
    gateway = {"CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD": "1", "ANTHROPIC_GOOGLE_CLOUD_BASE_URL": "https://gw.example"}
    assert claude_fronts([], gateway, cwd, home)[0].upstream == "https://gw.example"


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD": "1"}, "needs ANTHROPIC_GOOGLE_CLOUD_PROJECT"),
        ({**GCP_ON, "ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID": ""}, "needs ANTHROPIC_GOOGLE_CLOUD_PROJECT"),
        ({**GCP_ON, "ANTHROPIC_GOOGLE_CLOUD_PROJECT": "x/../../evil"}, "needs ANTHROPIC_GOOGLE_CLOUD_PROJECT"),
        ({**GCP_ON, "ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID": "wrkspc_a/b"}, "needs ANTHROPIC_GOOGLE_CLOUD_PROJECT"),
        ({**GCP_ON, "ANTHROPIC_GOOGLE_CLOUD_LOCATION": "us"}, "prices the global location only"),
    ],
)
def test_what_strict_mode_cannot_front_on_google_cloud_is_refused(dirs, env, why):
    cwd, home = dirs
    with pytest.raises(ConfigError, match=f"{why}.*--meter files"):
        claude_fronts([], env, cwd, home)


# ---- Claude in Microsoft Foundry


def test_foundry_is_fronted_at_its_resources_endpoint_and_priced_at_the_data_zones_rate(dirs):
    from capguard.core.pricing import FOUNDRY_DATA_ZONE
    from capguard.metering.proxy.dialects import FOUNDRY

    cwd, home = dirs
    on = {"CLAUDE_CODE_USE_FOUNDRY": "1", "ANTHROPIC_FOUNDRY_RESOURCE": "my-res", "ANTHROPIC_FOUNDRY_API_KEY": "k"}
    (front,) = claude_fronts([], on, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env) == (
        "foundry", "https://my-res.services.ai.azure.com/anthropic", FOUNDRY, ("ANTHROPIC_FOUNDRY_BASE_URL",)
    )  # fmt: skip
    gateway = {**on, "ANTHROPIC_FOUNDRY_BASE_URL": "https://apim.example/claude"}
    assert claude_fronts([], gateway, cwd, home)[0].upstream == "https://apim.example/claude"
    for env, why in (
        ({"CLAUDE_CODE_USE_FOUNDRY": "1"}, "no ANTHROPIC_FOUNDRY_RESOURCE is set"),
        ({**on, "ANTHROPIC_FOUNDRY_RESOURCE": "evil.example/x"}, "is no Foundry resource"),
    ):
        with pytest.raises(ConfigError, match=f"{why}.*--meter files"):
            claude_fronts([], env, cwd, home)
    found = route("POST", "v1/messages", FOUNDRY)
    assert (found.dialect, found.platform) == (ANTHROPIC, FOUNDRY)
    body = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": []}
    assert ask(ANTHROPIC, body, platform=FOUNDRY).geo == FOUNDRY_DATA_ZONE
    assert ask(ANTHROPIC, {**body, "model": "claude-sonnet-4-20250514"}, platform=FOUNDRY).geo is None
    assert json.loads(error_body(FOUNDRY, "no"))["error"]["message"] == "no"


def test_the_task_budget_goes_where_claude_code_sends_one_itself():
    """Claude Code 2.1.330 sends `task_budget` on Foundry, Claude Platform on AWS and Claude on Google Cloud (the
    Claude API), none on Vertex, Bedrock or Mantle (measured): the proxy adds it where Claude Code would."""
    from capguard.metering.proxy.dialects import FOUNDRY

    body = {"model": "claude-opus-5-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    for platform, added in ((FOUNDRY, True), (None, True), (MANTLE, False)):
        gate = Gate(Pricer(), cap_micro=1_000_000, task_budget=50_000)
        admission = gate.admit(ANTHROPIC, body, provider="anthropic", platform=platform)
        assert isinstance(admission, Admission)
        assert (admission.task is not None) is added, platform
        assert ("task_budget" in admission.body.get("output_config", {})) is added
