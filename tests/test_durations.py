"""Durations typed on the command line: units required, compound values, bounded."""

from __future__ import annotations

import pytest

from cloudshare_p2p.durations import format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("30m", 1800), ("8h", 28800), ("1d", 86400), ("1.5h", 5400), ("1h30m", 5400),
    ("1h 30m 5s", 5405), ("7d", 7 * 86400),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5s", "0s", "1h30", "h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_bare_number_asks_for_a_unit():
    with pytest.raises(ValueError, match="say 8h or 8m"):
        parse_duration("8")


def test_a_lease_longer_than_seven_days_is_refused():
    with pytest.raises(ValueError, match="at most 7d"):
        parse_duration("99999999999d")


@pytest.mark.parametrize("seconds", [45, 3600, 5430, 86400 + 61, 1])
def test_format_duration_reads_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_format_duration():
    assert [format_duration(s) for s in (45, 3600, 5430, 0)] == ["45s", "1h", "1h30m30s", "0s"]
