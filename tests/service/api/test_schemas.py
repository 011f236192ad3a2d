"""The HTTP schemas against the model layer's registries they mirror."""

from __future__ import annotations

from model.modes import MODES
from service.api.schemas import Mode


def test_the_api_mode_enum_lists_exactly_the_registry_modes() -> None:
    # The OpenAPI enum is spelled out for readable docs; a mode added to (or removed from)
    # model.modes.MODES without it would be refused (or offered) by /rank's validation.
    assert [mode.value for mode in Mode] == list(MODES)
