"""``is_known_timezone`` answers; ``require_timezone`` refuses with a sentence."""

from __future__ import annotations

import pytest

from hub.forecast.site import is_known_timezone, require_timezone


@pytest.mark.parametrize("name", ["Europe/Berlin", "UTC", "America/New_York"])
def test_known(name: str) -> None:
    assert is_known_timezone(name)
    require_timezone(name)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "Europe/"])
def test_unknown(name: str) -> None:
    assert not is_known_timezone(name)
    with pytest.raises(ValueError, match=r"unknown timezone .*: use an IANA name"):
        require_timezone(name)
