"""The data guard cannot be skipped: no endpoint backend without one, no way around it."""

from __future__ import annotations

import pytest

from medalign_utils.data import load_release
from medalign_utils.generation import DataGuard, DataGuardError, GenerationSettings, OpenAICompatibleBackend

# ------------------------------------------------------------------ data guard


def test_endpoint_backend_cannot_be_built_without_or_around_the_guard(real_like, tiny_cohort):
    real = load_release(real_like[0])
    assert not real.is_synthetic
    with pytest.raises(TypeError):
        OpenAICompatibleBackend("https://api.example.com/v1", "gpt", GenerationSettings())  # no guard: refused
    guard = DataGuard.for_release(real, allowed_hosts=[])
    with pytest.raises(DataGuardError, match="refusing to send MedAlign data to api.example.com"):
        OpenAICompatibleBackend(["http://127.0.0.1:9/v1", "https://api.example.com/v1"], "m", guard=guard)
    assert OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", guard=guard).base_url == "http://127.0.0.1:9/v1"
    # Listed but not as zero retention (PhysioNet's 2025 policy): refused before anything is sent.
    listed = DataGuard.for_release(real, allowed_hosts=["phi.hospital.org"])
    with pytest.raises(DataGuardError, match="not listed with zero_retention: true"):
        OpenAICompatibleBackend("https://phi.hospital.org/v1", "m", guard=listed)
    allowed = DataGuard.for_release(real, allowed_hosts=[{"host": "phi.hospital.org", "zero_retention": True}])
    assert OpenAICompatibleBackend("https://phi.hospital.org/v1", "m", guard=allowed)
    synthetic = DataGuard.for_release(load_release(tiny_cohort))
    assert OpenAICompatibleBackend("https://api.example.com/v1", "m", guard=synthetic)


def test_allowed_hosts_must_be_a_list():
    with pytest.raises(DataGuardError, match="not host names or"):
        DataGuard.for_release(
            type("R", (), {"is_synthetic": False})(), allowed_hosts=[{"host": "h", "zero_retention": "yes"}]
        )
    with pytest.raises(DataGuardError, match="allowed_hosts must be a list"):
        DataGuard(False, "example.org")
    with pytest.raises(DataGuardError, match="allowed_hosts must be a list"):
        DataGuard.for_release(type("R", (), {"is_synthetic": False})(), allowed_hosts="e")
