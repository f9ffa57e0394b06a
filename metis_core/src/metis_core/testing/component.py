"""Conformance checks common to every registered component."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from metis_core.components import CONFIG_NAME, Component
from metis_core.config import ComponentConfig
from metis_core.errors import ComponentConfigError, ContractMismatchError
from metis_core.registry import Registry, registry_for_kind


class ComponentConformance:
    """Checks registration, config round trips and save/load of one component.

    Subclasses set:

    Attributes:
        kind: Registry kind, e.g. ``"embodiments"``.
        component_name: Registry name of the component under test.
        config_overrides: Keyword config fields for building small test instances.
    """

    kind: ClassVar[str]
    component_name: ClassVar[str]
    config_overrides: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def registry(self) -> Registry[Any]:
        return registry_for_kind(self.kind)

    @pytest.fixture
    def component(self, registry: Registry[Any]) -> Component:
        return registry.create(self.component_name, **self.config_overrides)

    def test_registered_through_entry_point_or_hook(self, registry: Registry[Any]) -> None:
        assert self.component_name in registry.names()
        cls = registry.get(self.component_name)
        assert cls.name == self.component_name
        assert issubclass(cls, registry.base)

    def test_config_is_frozen_and_keyword_only(self, component: Component) -> None:
        config = component.config
        assert isinstance(config, ComponentConfig)
        params = type(config).__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, "component configs must be frozen dataclasses"
        fields = type(config).__dataclass_fields__  # type: ignore[attr-defined]
        assert all(f.kw_only for f in fields.values()), "component configs must be keyword-only"

    def test_config_json_round_trip(self, component: Component) -> None:
        data = component.config.to_dict(type_name=self.component_name)
        assert data["type"] == self.component_name
        again = type(component.config).from_dict(json.loads(json.dumps(data)))
        assert again == component.config

    def test_config_rejects_unknown_key(self, component: Component) -> None:
        data = component.config.to_dict(type_name=self.component_name)
        data["definitely_not_a_field"] = 1
        with pytest.raises(ComponentConfigError, match="definitely_not_a_field"):
            type(component.config).from_dict(data)

    def test_save_load_round_trip_is_exact(self, component: Component, tmp_path: Path) -> None:
        component.save_pretrained(tmp_path / "saved")
        loaded = type(component).from_pretrained(tmp_path / "saved")
        assert loaded.config == component.config
        before, after = component.state_tensors(), loaded.state_tensors()
        assert sorted(before) == sorted(after)
        for key, value in before.items():
            assert torch.equal(value, after[key]), (
                f"tensor {key} changed in the save/load round trip"
            )
        # Loading through the registry (by the `type` key) gives the same class.
        generic = registry_for_kind(self.kind).base.from_pretrained(tmp_path / "saved")
        assert type(generic) is type(component)

    def test_load_rejects_other_contract_version(
        self, component: Component, tmp_path: Path
    ) -> None:
        component.save_pretrained(tmp_path / "saved")
        config_path = tmp_path / "saved" / CONFIG_NAME
        data = json.loads(config_path.read_text())
        data["_metis"]["contract"]["version"] = 999
        config_path.write_text(json.dumps(data))
        with pytest.raises(ContractMismatchError, match="version 999"):
            type(component).from_pretrained(tmp_path / "saved")
