"""capguard.core.sanitize: every hostile number of issue 11 in, a bounded number (or NotANumber) out; names escaped."""

from __future__ import annotations

import json

import pytest

from capguard.core import sanitize
from capguard.core.sanitize import MAX_REPLY_USD_MICRO, MAX_TOKENS, NotANumber


def _id(value: object) -> str:
    return "huge" if isinstance(value, int) and abs(value) > 10**40 else repr(value)[:14]


# what json.loads makes of the hostile figures a model server or a corrupt file can write
BEYOND = [
    json.loads("Infinity"),
    json.loads("1e300"),
    json.loads("1e30"),
    2**63,
    2**64,
    10**19,
    json.loads("1e999"),
    10**5000,
]
NOT_NUMBERS = [
    json.loads("NaN"),
    json.loads("-Infinity"),
    -1,
    -0.5,
    -(2**64),
    True,
    False,
    None,
    "12",
    "abc",
    "",
    [1],
    {"n": 1},
    -(10**5000),
]


@pytest.mark.parametrize("value", BEYOND, ids=_id)
def test_a_count_beyond_the_bound_counts_as_the_bound(value):
    assert sanitize.count(value, "input_tokens") == MAX_TOKENS


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=_id)
def test_what_is_not_a_count_is_refused_with_a_value_error(value):
    with pytest.raises(NotANumber) as err:
        sanitize.count(value, "input_tokens")
    assert isinstance(err.value, ValueError)  # every parser already turns ValueError into a Malformed line
    assert "input_tokens" in str(err.value) and len(str(err.value)) < 120


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0), (1, 1), (12.9, 12), (MAX_TOKENS, MAX_TOKENS), (MAX_TOKENS - 1, MAX_TOKENS - 1), (3e5, 300_000)],
)
def test_plain_counts_pass_unchanged(value, expected):
    assert sanitize.count(value) == expected and type(sanitize.count(value)) is int


@pytest.mark.parametrize("value", BEYOND + [10_000, 10_000.01, 1e6], ids=_id)
def test_a_cost_beyond_ten_thousand_dollars_counts_as_ten_thousand(value):
    assert sanitize.usd_micro(value, "cost") == MAX_REPLY_USD_MICRO == 10_000 * 10**6


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=_id)
def test_what_is_not_an_amount_is_refused(value):
    with pytest.raises(NotANumber):
        sanitize.usd_micro(value, "cost")


@pytest.mark.parametrize(
    "usd, micro",
    [
        (0, 0),
        (0.1, 100_000),
        (0.0000005, 1),
        (0.0000004, 0),
        (1.234567891, 1_234_568),
        (9999.99, 9_999_990_000),
        (3, 3_000_000),
    ],
)
def test_amounts_round_to_micro_dollars_half_up(usd, micro):
    assert sanitize.usd_micro(usd) == micro


def test_a_session_total_has_its_own_larger_bound():
    assert sanitize.usd_micro(50_000.0, "total", sanitize.MAX_TOTAL_USD_MICRO) == 50_000 * 10**6
    assert sanitize.usd_micro(float("inf"), "total", sanitize.MAX_TOTAL_USD_MICRO) == sanitize.MAX_TOTAL_USD_MICRO


def test_micro_dollars_from_outside_are_bounded_too():
    assert sanitize.micro(2**64) == MAX_REPLY_USD_MICRO and sanitize.micro(12_044) == 12_044
    with pytest.raises(NotANumber):
        sanitize.micro("12044")


def test_the_bounds_cannot_overflow_a_64_bit_ledger():
    # six usage fields at the bound, priced at an absurd $1,000 per million tokens, in micro-dollars
    assert 6 * MAX_TOKENS * 1_000 < 2**63 and sanitize.MAX_TOTAL_USD_MICRO < 2**63


def test_figures_at_the_bound_are_named_as_suspicious():
    assert sanitize.at_bound({"prompt_tokens": 12, "completion_tokens": 4}) is None
    why = sanitize.at_bound({"prompt_tokens": MAX_TOKENS, "completion_tokens": 4})
    assert why.startswith("prompt_tokens at or beyond capguard's bound of 1,000,000,000")
    assert sanitize.usd_at_bound(MAX_REPLY_USD_MICRO) and sanitize.usd_at_bound(5) is None


def test_names_are_cut_to_size_and_only_strings_are_names():
    assert sanitize.name("gpt-4o") == "gpt-4o"
    assert len(sanitize.name("x" * 1_000_000)) == sanitize.MAX_NAME == 200
    assert sanitize.name(12) is None and sanitize.name("") is None and sanitize.name(None) is None


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[2J\x1b[31mgpt-4o", "\\x1b[2J\\x1b[31mgpt-4o"),  # ANSI: clear screen, red
        ("model\nfake line", "model\\x0afake line"),
        ("a\rb\tc\x00d\x7f", "a\\x0db\\x09c\\x00d\\x7f"),
        ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("claude-sonnet-4-5 é 模型", "claude-sonnet-4-5 é 模型"),  # letters pass
    ],
)
def test_printable_escapes_control_characters(raw, shown):
    assert sanitize.printable(raw) == shown


@pytest.mark.parametrize(
    "raw, cell",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("gpt-4o", "gpt-4o"),
        ("\x1b]8;;x\x07", "\\x1b]8;;x\\x07"),
    ],
)
def test_csv_cells_never_start_a_formula(raw, cell):
    assert sanitize.csv_cell(raw) == cell
