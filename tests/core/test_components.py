import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metis_core import Tokenizer
from metis_core.components import CONFIG_NAME, WEIGHTS_NAME
from metis_core.config import ComponentConfig
from metis_core.errors import ComponentConfigError, ContractMismatchError
from metis_core.io import CorruptFileError


@dataclass(frozen=True, kw_only=True)
class LinearCodeConfig(ComponentConfig):
    """Args:
    levels: Quantisation levels per value.
    dim: Values per frame.
    """

    levels: int = 16
    dim: int = 48

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")


class LinearCode(Tokenizer, torch.nn.Module):
    """A learned affine map then uniform rounding: enough to test save/load of real tensors."""

    name = "linear_code"
    config_class = LinearCodeConfig

    def __init__(self, config: LinearCodeConfig) -> None:
        torch.nn.Module.__init__(self)
        self.config = config
        self.scale = torch.nn.Parameter(torch.ones(config.dim))
        self.register_buffer("offset", torch.zeros(config.dim))

    @property
    def vocab_size(self) -> int:
        return self.config.levels

    @property
    def tokens_per_window(self) -> int | None:
        return None

    def encode(self, actions, hand_mask=None):
        unit = ((actions - self.offset) * self.scale).clamp(0, 1)
        return (unit * (self.config.levels - 1)).round().long().flatten(1)

    def decode(self, codes, start=None):
        unit = codes.float() / (self.config.levels - 1)
        return (unit / self.scale + self.offset).reshape(codes.shape[0], -1, self.config.dim)


def _trained() -> LinearCode:
    model = LinearCode(LinearCodeConfig(levels=32))
    with torch.no_grad():
        model.scale.copy_(torch.rand(48) + 0.5)
        model.offset.copy_(torch.randn(48))
    return model


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    model = _trained()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert config["type"] == "linear_code"
    assert config["levels"] == 32
    assert config["_metis"]["contract"] == {"name": "metis-hand", "version": 1}
    assert config["_metis"]["kind"] == "tokenizers"
    loaded = LinearCode.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert torch.equal(loaded.scale, model.scale)
    assert torch.equal(loaded.offset, model.offset)
    actions = torch.rand(2, 3, 48)
    assert torch.equal(loaded.encode(actions), model.encode(actions))


def test_create_and_from_config() -> None:
    assert LinearCode.create(levels=8).vocab_size == 8
    assert LinearCode.from_config({"levels": 4}).vocab_size == 4
    with pytest.raises(ComponentConfigError, match="takes a LinearCodeConfig"):
        LinearCode.from_config(ComponentConfig())
    with pytest.raises(ValueError, match="levels must be >= 2"):
        LinearCode.create(levels=1)


def test_definition_time_checks() -> None:
    with pytest.raises(TypeError, match="must set a class attribute `name`"):

        class NoName(LinearCode):
            name = "Bad Name"

    with pytest.raises(TypeError, match="must set `config_class`"):

        class NoConfig(LinearCode):
            name = "no_config"
            config_class = dict  # type: ignore[assignment]


def test_abstract_intermediate_classes_are_allowed() -> None:
    class PartialTokenizer(Tokenizer):  # still abstract: no checks yet
        pass

    assert PartialTokenizer.__abstractmethods__


def test_wrong_type_and_contract_are_rejected(tmp_path: Path) -> None:
    model = _trained()
    model.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_NAME
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "type": "motion_rvq"}))
    with pytest.raises(
        ComponentConfigError, match="holds a 'motion_rvq' component, not 'linear_code'"
    ):
        LinearCode.from_pretrained(tmp_path / "ckpt")
    data["_metis"]["contract"] = {"name": "metis-hand", "version": 0}
    path.write_text(json.dumps(data))
    with pytest.raises(ContractMismatchError, match="version 0"):
        LinearCode.from_pretrained(tmp_path / "ckpt")


def test_truncated_weights_raise_corrupt_file_error(tmp_path: Path) -> None:
    _trained().save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="not a readable safetensors file"):
        LinearCode.from_pretrained(tmp_path / "ckpt")


def test_config_that_does_not_fit_the_weights_is_reported(tmp_path: Path) -> None:
    _trained().save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), "dim": 12}))
    with pytest.raises(
        CorruptFileError, match=r"'(scale|offset)' has shape \(48,\) in the file but \(12,\)"
    ):
        LinearCode.from_pretrained(tmp_path / "ckpt")


def test_missing_directory_and_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist|no such directory"):
        LinearCode.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        LinearCode.from_pretrained(tmp_path / "empty")


def test_interrupted_save_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _trained()
    first.save_pretrained(tmp_path / "ckpt")
    second = _trained()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing weights")

    monkeypatch.setattr("metis_core.components.save_safetensors", explode)
    with pytest.raises(KeyboardInterrupt):
        second.save_pretrained(tmp_path / "ckpt")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind
    loaded = LinearCode.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.scale, first.scale)
