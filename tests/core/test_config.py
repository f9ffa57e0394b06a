from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from metis_core.config import ComponentConfig
from metis_core.errors import ComponentConfigError


@dataclass(frozen=True, kw_only=True)
class InnerConfig(ComponentConfig):
    width: int = 4


@dataclass(frozen=True, kw_only=True)
class ExampleConfig(ComponentConfig):
    """Args:
    levels: Number of levels.
    sizes: Sizes per level.
    mode: Mode name.
    scale: A scale.
    inner: Nested config.
    """

    levels: int = 2
    sizes: tuple[int, ...] = (8, 16)
    mode: str = "a"
    scale: float = 1.0
    note: str | None = None
    inner: InnerConfig = field(default_factory=InnerConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")


def test_frozen_and_keyword_only() -> None:
    config = ExampleConfig()
    with pytest.raises(FrozenInstanceError):
        config.levels = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ExampleConfig(3)  # type: ignore[misc]


def test_round_trip_with_type_key_and_json_forms() -> None:
    ExampleConfig.component_type = "example"
    try:
        config = ExampleConfig(levels=3, sizes=(1, 2, 3), scale=2, inner=InnerConfig(width=7))
        data = config.to_dict()
        assert data["type"] == "example"
        assert data["sizes"] == [1, 2, 3]
        assert data["inner"] == {"width": 7}
        again = ExampleConfig.from_dict(data)
        assert again == config
        assert isinstance(again.sizes, tuple)
        assert isinstance(again.scale, float)
        with pytest.raises(
            ComponentConfigError, match="configures 'example', but the data has type 'other'"
        ):
            ExampleConfig.from_dict({**data, "type": "other"})
    finally:
        ExampleConfig.component_type = None


def test_unknown_key_suggests_the_close_field() -> None:
    with pytest.raises(
        ComponentConfigError, match=r"unknown key\(s\) 'level' \(did you mean 'levels'\?\)"
    ):
        ExampleConfig.from_dict({"level": 2})


def test_wrong_types_are_rejected() -> None:
    with pytest.raises(
        ComponentConfigError, match=r"ExampleConfig.levels: expected an int, got str"
    ):
        ExampleConfig(levels="2")  # type: ignore[arg-type]
    with pytest.raises(ComponentConfigError, match=r"sizes\[1\]: expected an int"):
        ExampleConfig(sizes=(1, 2.5))  # type: ignore[arg-type]
    with pytest.raises(ComponentConfigError, match="expected a bool|expected an int"):
        ExampleConfig(levels=True)


def test_post_init_validation_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="levels must be >= 1, got 0"):
        ExampleConfig(levels=0)


def test_replace_validates_again() -> None:
    assert ExampleConfig().replace(levels=5).levels == 5
    with pytest.raises(ValueError, match="levels must be >= 1"):
        ExampleConfig().replace(levels=0)
