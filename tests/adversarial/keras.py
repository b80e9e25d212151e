"""Adversarial cases: keras. See tests/adversarial/__init__.py for the shape of a case."""

from __future__ import annotations

from . import Case

CASES: list[Case] = []
