"""tests/bounds.py against the guard pytest-timeout puts on each test: a wait must end on its own
bound, with its own message, before the guard kills the test without one."""

from __future__ import annotations

import bounds
import pytest


@pytest.mark.pure
def test_the_per_test_guard_is_above_every_named_bound(pytestconfig: pytest.Config) -> None:
    guard = float(pytestconfig.getini("timeout"))
    named = {k: v for k, v in vars(bounds).items() if k.isupper() and isinstance(v, float)}
    assert len(named) >= 5, named
    assert all(v < guard for v in named.values()), (guard, named)
