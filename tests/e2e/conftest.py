"""Fixtures of the end-to-end tests: an OTLP receiver per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.otlp_receiver import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started
