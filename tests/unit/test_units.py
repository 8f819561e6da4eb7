"""units.py: the amounts, token counts and durations users type, and how capguard prints them."""

from __future__ import annotations

import pytest

from capguard.core import units


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("5", 5_000_000),
        ("$5", 5_000_000),
        ("0.50", 500_000),
        ("5 USD", 5_000_000),
        ("5usd", 5_000_000),
        ("1,000", 1_000_000_000),
        ("$0.000001", 1),
        (5, 5_000_000),
        (0.1, 100_000),
    ],
)
def test_usd_is_read_in_the_forms_users_type(text, micro):
    assert units.parse_usd(text) == micro


def test_usd_rejects_words_and_names_the_input():
    with pytest.raises(ValueError, match="'five'"):
        units.parse_usd("five")


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "$-0.5"])
def test_usd_rejects_negative_and_non_finite_amounts(text):
    with pytest.raises(ValueError):
        units.parse_usd(text)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("500000", 500_000),
        ("500k", 500_000),
        ("500K", 500_000),
        ("1.5M", 1_500_000),
        ("2_000_000", 2_000_000),
        ("1,000", 1_000),
        ("2g", 2_000_000_000),
        ("500 k", 500_000),
        (42, 42),
    ],
)
def test_tokens_accept_plain_counts_and_suffixes(text, count):
    assert units.parse_tokens(text) == count


def test_tokens_reject_a_fraction_of_a_token():
    with pytest.raises(ValueError, match="whole number"):
        units.parse_tokens("1.2345k")


@pytest.mark.parametrize("text", ["-5", "5x", "k", "", True])
def test_tokens_reject_what_is_not_a_count(text):
    with pytest.raises(ValueError):
        units.parse_tokens(text)


def test_count_reads_a_plain_whole_number():
    assert units.parse_count(" 12 ") == 12
    assert units.parse_count(7) == 7


@pytest.mark.parametrize("text", ["-1", "1.5", "ten", True])
def test_count_rejects_negatives_fractions_words_and_booleans(text):
    with pytest.raises(ValueError):
        units.parse_count(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("90", 90.0),
        ("1.5h", 5400.0),
        (" 1h 30m ", 5400.0),
        ("2d", 172800.0),
        ("1m30s", 90.0),
        (90, 90.0),
        (2.5, 2.5),
    ],
)
def test_duration_accepts_units_and_bare_seconds(text, seconds):
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90x", "h", "-5", "1h30", "soon", -1, True])
def test_duration_rejects_garbage_and_negatives(text):
    with pytest.raises(ValueError):
        units.parse_duration(text)


@pytest.mark.parametrize(("text", "value"), [("0.8", 0.8), ("80%", 0.8), ("1", 1.0), ("100%", 1.0), (0.5, 0.5)])
def test_fraction_accepts_decimals_and_percentages(text, value):
    assert units.parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "0%", "1.5", "150%", "most", "-0.2"])
def test_fraction_must_lie_in_zero_one(text):
    with pytest.raises(ValueError):
        units.parse_fraction(text)


@pytest.mark.parametrize("text", ["1", "true", "Yes", "ON", True])
def test_bool_true_spellings(text):
    assert units.parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off", "", False])
def test_bool_false_spellings(text):
    assert units.parse_bool(text) is False


def test_bool_rejects_other_words():
    with pytest.raises(ValueError, match="maybe"):
        units.parse_bool("maybe")


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (5_000_000, "$5.00"),
        (5_030_000, "$5.03"),
        (1_234_560_000, "$1,234.56"),
        (10_000, "$0.01"),
        (5_000, "$0.0050"),
        (880, "$0.0009"),
        (0, "$0.00"),
    ],
)
def test_usd_prints_cents_and_four_decimals_below_a_cent(micro, text):
    assert units.format_usd(micro) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(950, "950"), (2_500, "2.5k"), (812_345, "812k"), (1_234_567, "1.23M")],
)
def test_tokens_print_short(count, text):
    assert units.format_tokens(count) == text


@pytest.mark.parametrize(("seconds", "text"), [(4.2, "4.2s"), (724.3, "12m04s"), (3725, "1h02m05s"), (60, "1m00s")])
def test_durations_print_as_clock_parts(seconds, text):
    assert units.format_duration(seconds) == text


@pytest.mark.parametrize("micro", [10_000, 5_000_000, 123_450_000])
def test_printed_usd_reads_back_to_the_same_amount(micro):
    assert units.parse_usd(units.format_usd(micro)) == micro


def test_printed_duration_reads_back_to_the_same_seconds():
    assert units.parse_duration(units.format_duration(3725)) == 3725


def test_counts_agree_with_their_number():
    assert units.format_count(1, "reply", "replies") == "1 reply"
    assert units.format_count(0, "reply", "replies") == "0 replies"
    assert units.format_count(12345, "reply", "replies") == "12,345 replies"
