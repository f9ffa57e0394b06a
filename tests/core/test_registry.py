import sys

import pytest
from tests_helpers import entry_points_under

from metis_core import Embodiment, Tokenizer
from metis_core.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError
from metis_core.hookspecs import hookimpl
from metis_core.plugins import make_plugin_manager
from metis_core.registry import EMBODIMENTS, TOKENIZERS, Registry, registry_for_kind

TOKENIZER_MODULE = """
from dataclasses import dataclass
import torch
from metis_core import ComponentConfig, Tokenizer

@dataclass(frozen=True, kw_only=True)
class UniformConfig(ComponentConfig):
    bins: int = 256

class Uniform(Tokenizer):
    name = "{name}"
    config_class = UniformConfig

    def __init__(self, config):
        self.config = config

    vocab_size = property(lambda self: self.config.bins)
    tokens_per_window = property(lambda self: None)

    def encode(self, actions, hand_mask=None):
        return (actions.clamp(-1, 1).add(1).div(2) * (self.config.bins - 1)).round().long().flatten(1)

    def decode(self, codes, start=None):
        return (codes.float() / (self.config.bins - 1) * 2 - 1).reshape(codes.shape[0], -1, 48)
"""


def _registry(*roots, plugins=()) -> Registry:
    return Registry(
        "tokenizers",
        "metis.tokenizers",
        Tokenizer,
        plugin_manager=lambda: make_plugin_manager(load_entry_points=False, plugins=plugins),
        entry_points=entry_points_under(*roots),
    )


def test_names_are_listed_without_importing(fake_distribution) -> None:
    root = fake_distribution(
        "metis-uniform",
        "1.2.3",
        entry_points={"metis.tokenizers": {"uniform": "lazy_uniform:Uniform"}},
        modules={"lazy_uniform": TOKENIZER_MODULE.format(name="uniform")},
    )
    registry = _registry(root)
    assert registry.names() == ["uniform"]
    assert "lazy_uniform" not in sys.modules
    info = registry.info("uniform")
    assert (info.distribution, info.target, info.origin) == (
        "metis-uniform 1.2.3",
        "lazy_uniform:Uniform",
        "entry point",
    )
    cls = registry.get("uniform")
    assert "lazy_uniform" in sys.modules
    tokenizer = registry.create("uniform", bins=16)
    assert isinstance(tokenizer, cls)
    assert tokenizer.vocab_size == 16


def test_unknown_name_suggests_close_matches(fake_distribution) -> None:
    root = fake_distribution(
        "metis-uniform",
        entry_points={"metis.tokenizers": {"uniform": "m1:Uniform"}},
        modules={"m1": TOKENIZER_MODULE.format(name="uniform")},
    )
    with pytest.raises(
        UnknownComponentError, match="no tokenizer named 'unifrom'. Did you mean 'uniform'"
    ):
        _registry(root).get("unifrom")


def test_duplicate_names_are_an_error_naming_both(fake_distribution) -> None:
    first = fake_distribution(
        "metis-a",
        entry_points={"metis.tokenizers": {"uniform": "ma:Uniform"}},
        modules={"ma": TOKENIZER_MODULE.format(name="uniform")},
    )
    second = fake_distribution(
        "metis-b",
        entry_points={"metis.tokenizers": {"uniform": "mb:Uniform"}},
        modules={"mb": TOKENIZER_MODULE.format(name="uniform")},
    )
    registry = _registry(first, second)
    assert registry.names() == ["uniform"]
    with pytest.raises(
        DuplicateComponentError,
        match=r"registered more than once.*ma:Uniform from metis-a.*mb:Uniform from metis-b",
    ):
        registry.get("uniform")


def test_broken_plugin_is_reported_and_others_still_load(fake_distribution) -> None:
    root = fake_distribution(
        "metis-mixed",
        entry_points={
            "metis.tokenizers": {"uniform": "good_mod:Uniform", "broken": "broken_mod:Broken"}
        },
        modules={
            "good_mod": TOKENIZER_MODULE.format(name="uniform"),
            "broken_mod": "raise ImportError('needs libfoo, which is not installed')\n",
        },
    )
    registry = _registry(root)
    with pytest.raises(PluginLoadError, match="'broken'.*broken_mod:Broken.*libfoo") as excinfo:
        registry.get("broken")
    assert isinstance(excinfo.value.__cause__, ImportError)
    loaded, broken = registry.load_all()
    assert list(loaded) == ["uniform"]
    assert [b.name for b in broken] == ["broken"]
    assert "libfoo" in broken[0].error
    assert "Traceback" in broken[0].traceback


def test_entry_point_key_must_equal_the_class_name(fake_distribution) -> None:
    root = fake_distribution(
        "metis-x",
        entry_points={"metis.tokenizers": {"alias": "mx:Uniform"}},
        modules={"mx": TOKENIZER_MODULE.format(name="uniform")},
    )
    with pytest.raises(PluginLoadError, match="must equal the entry-point key"):
        _registry(root).get("alias")


def test_entry_point_of_the_wrong_kind_is_rejected(fake_distribution) -> None:
    root = fake_distribution(
        "metis-y", entry_points={"metis.tokenizers": {"uniform": "collections:OrderedDict"}}
    )
    with pytest.raises(PluginLoadError, match="not a subclass of Tokenizer"):
        _registry(root).get("uniform")


def test_components_registered_through_the_hook(fake_distribution) -> None:
    fake_distribution(
        "metis-hooked",
        entry_points={},
        modules={"hooked_mod": TOKENIZER_MODULE.format(name="hooked")},
    )
    import hooked_mod

    class Plugin:
        @hookimpl
        def register_components(self, register):
            register("tokenizers", hooked_mod.Uniform)
            register("embodiments", object)  # other kinds are ignored by this registry

    registry = _registry(plugins=[Plugin()])
    assert registry.names() == ["hooked"]
    assert registry.info("hooked").origin == "hook"
    assert registry.get("hooked") is hooked_mod.Uniform


def test_manual_register_rejects_duplicates_and_wrong_bases(fake_distribution) -> None:
    fake_distribution(
        "metis-manual",
        entry_points={},
        modules={"manual_mod": TOKENIZER_MODULE.format(name="manual")},
    )
    import manual_mod

    registry = _registry()
    registry.register(manual_mod.Uniform)
    assert registry.get("manual") is manual_mod.Uniform
    with pytest.raises(DuplicateComponentError, match="already registered"):
        registry.register(manual_mod.Uniform)
    with pytest.raises(TypeError, match="not a subclass of Tokenizer"):
        registry.register(dict)  # type: ignore[arg-type]
    registry.unregister("manual")
    assert registry.names() == []


def test_global_registries() -> None:
    assert registry_for_kind("tokenizers") is TOKENIZERS
    assert EMBODIMENTS.base is Embodiment
    with pytest.raises(UnknownComponentError, match="unknown component kind 'tokeniser'"):
        registry_for_kind("tokeniser")
