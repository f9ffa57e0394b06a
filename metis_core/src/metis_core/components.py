"""The base class of every registered component and its save/load format.

A saved component is a directory (or a Hugging Face Hub repository) holding:

* ``config.json`` — the config's fields, a ``type`` key naming the registry entry, and a
  ``_metis`` block with the component kind, the hand contract and the library versions;
* ``model.safetensors`` — the component's tensors (weights, buffers, fitted statistics).

This follows the conventions of ``huggingface_hub.ModelHubMixin``; loading never unpickles.

Layering: this module sits above :mod:`metis_core.registry` (which names the interfaces by path
and imports neither them nor this module) and below :mod:`metis_core.interfaces`, so the kernel's
imports read one way: errors/config/io/contract → plugins → registry → components → interfaces.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from metis_core.config import ComponentConfig
from metis_core.contract import HAND_CONTRACT, ContractSpec, check_contract
from metis_core.errors import ComponentConfigError
from metis_core.io import (
    CorruptFileError,
    atomic_directory,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from metis_core.registry import registry_for_kind

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "Component", "load_component", "resolve_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
ComponentT = TypeVar("ComponentT", bound="Component")


def _is_abstract(cls: type) -> bool:
    # ABCMeta computes __abstractmethods__ only after __init_subclass__ has run, so look at the
    # members directly.
    return any(
        getattr(getattr(cls, attr, None), "__isabstractmethod__", False) for attr in dir(cls)
    )


class Component:
    """Base of tokenizers, backbones, action heads, embodiments and dataset sources.

    Concrete subclasses must set:

    * ``name`` — the registry name (lower-case, digits, underscores), equal to the entry-point
      key and to the component's folder name;
    * ``config_class`` — a :class:`~metis_core.config.ComponentConfig` subclass;

    and take their config as the single positional constructor argument. Violations raise
    ``TypeError`` when the class is defined.

    Attributes:
        kind: The registry kind (``"tokenizers"``, ...), set by the interface base classes.
        contract: The data contract the component reads and writes.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ComponentConfig]]
    kind: ClassVar[str]
    contract: ClassVar[ContractSpec] = HAND_CONTRACT

    config: ComponentConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        qualname = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(getattr(cls, "kind", None), str):
            raise TypeError(
                f"{qualname} must derive from one of the component interfaces (Tokenizer, "
                "Backbone, ActionHead, Embodiment, DatasetSource)"
            )
        name = cls.__dict__.get("name", getattr(cls, "name", None))
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise TypeError(
                f"{qualname} must set a class attribute `name`: its registry name, lower-case "
                f"letters, digits and underscores (got {name!r})"
            )
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, ComponentConfig)):
            raise TypeError(
                f"{qualname} must set `config_class` to a ComponentConfig subclass (got {config_class!r})"
            )
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not positional:
            raise TypeError(
                f"{qualname}.__init__ must take the config as its first positional argument"
            )
        if config_class.component_type is None:
            config_class.component_type = name

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls: type[ComponentT], config: ComponentConfig | Mapping[str, Any]
    ) -> ComponentT:
        """Build the component from a config object or a dict of its fields."""
        if isinstance(config, Mapping):
            config = cls.config_class.from_dict(config)
        if not isinstance(config, cls.config_class):
            raise ComponentConfigError(
                f"{cls.__name__} takes a {cls.config_class.__name__}, got {type(config).__name__}"
            )
        return cls(config)  # type: ignore[call-arg]

    @classmethod
    def create(cls: type[ComponentT], **config: Any) -> ComponentT:
        """Build the component from keyword config fields (defaults for the rest).

        Raises:
            ComponentConfigError: For an unknown field (naming the closest valid ones, e.g.
                ``ik_seed`` → ``ik_seeds``) or a value of the wrong type.
        """
        if "type" in config or "_metis" in config:
            raise ComponentConfigError(
                f"{cls.__name__}.create: 'type' and '_metis' are file-format keys, not config fields"
            )
        return cls.from_config(cls.config_class.from_dict(config))

    # -- tensors -----------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that ``model.safetensors`` holds; by default a module's ``state_dict``."""
        if isinstance(self, torch.nn.Module):
            return dict(self.state_dict())
        return {}

    def load_state_tensors(
        self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True
    ) -> None:
        """Restore what :meth:`state_tensors` returned.

        Raises:
            CorruptFileError: For missing or unexpected tensors (when ``strict``) or wrong shapes.
        """
        if isinstance(self, torch.nn.Module):
            expected = self.state_dict()
            missing = sorted(set(expected) - set(tensors))
            unexpected = sorted(set(tensors) - set(expected))
            if strict and (missing or unexpected):
                raise CorruptFileError(
                    f"{type(self).__name__}: saved tensors do not match the model built from the "
                    f"config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                    f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
                )
            for key, value in tensors.items():
                if key in expected and tuple(expected[key].shape) != tuple(value.shape):
                    raise CorruptFileError(
                        f"{type(self).__name__}: tensor {key!r} has shape {tuple(value.shape)} in "
                        f"the file but {tuple(expected[key].shape)} in the model built from the config"
                    )
            self.load_state_dict(dict(tensors), strict=strict)
        elif tensors and strict:
            raise CorruptFileError(
                f"{type(self).__name__} holds no tensors, but the file has {sorted(tensors)[:5]}"
            )

    # -- save / load -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically.

        Args:
            directory: Target directory; created if needed.
            overwrite: Replace an existing save there.

        Returns:
            The directory.
        """
        from metis_core import __version__

        target = Path(directory)
        config = self.config.to_dict(type_name=self.name)
        config["_metis"] = {
            "kind": self.kind,
            "contract": self.contract.to_dict(),
            "metis_core_version": __version__,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
        }
        with atomic_directory(target, overwrite=overwrite) as staging:
            write_json(staging / CONFIG_NAME, config)
            save_safetensors(
                staging / WEIGHTS_NAME,
                self.state_tensors(),
                metadata={"type": self.name, "kind": self.kind, "contract": self.contract.id},
            )
        return target

    @classmethod
    def from_pretrained(
        cls: type[ComponentT],
        path_or_repo: str | os.PathLike[str],
        *,
        revision: str | None = None,
        strict: bool = True,
    ) -> ComponentT:
        """Load a component saved by :meth:`save_pretrained`.

        Called on a concrete class, the file must hold that component; called on an interface
        (``Tokenizer.from_pretrained``), the class is found through the registry by the ``type``
        key.

        Args:
            path_or_repo: A local directory, or a Hugging Face Hub repository id (downloaded
                explicitly; this is the only place that may touch the network).
            revision: Hub revision, for repository ids.
            strict: Demand that the saved tensors match the model exactly.

        Raises:
            FileNotFoundError: If the directory lacks ``config.json``.
            ContractMismatchError: If the save was made under another hand contract.
            ComponentConfigError: If it holds another kind or type of component.
        """
        directory = resolve_pretrained(path_or_repo, revision=revision)
        config_data = read_json(directory / CONFIG_NAME)
        if not isinstance(config_data, dict) or "type" not in config_data:
            raise CorruptFileError(
                f"{directory / CONFIG_NAME} has no 'type' key naming the component"
            )
        meta = config_data.get("_metis", {})
        kind = meta.get("kind")
        own_kind = getattr(cls, "kind", None)
        if own_kind is not None and kind is not None and kind != own_kind:
            raise ComponentConfigError(
                f"{directory} holds a component of kind {kind!r}, not {own_kind!r}"
            )
        check_contract(meta.get("contract"), where=str(directory), expected=cls.contract)
        type_name = config_data["type"]
        if not isinstance(type_name, str):
            raise CorruptFileError(
                f"{directory / CONFIG_NAME}: 'type' must be the component's registry name (a "
                f"string), got {type(type_name).__name__} {type_name!r}"
            )
        if isinstance(getattr(cls, "name", None), str) and not _is_abstract(cls):
            target_cls: type[Component] = cls
            if type_name != cls.name:
                raise ComponentConfigError(
                    f"{directory} holds a {type_name!r} component, not {cls.name!r}; load it with "
                    f"the registry or with that component's class"
                )
        else:
            if not (kind or own_kind):
                raise CorruptFileError(
                    f"{directory / CONFIG_NAME} does not record the component kind"
                )
            target_cls = registry_for_kind(kind or own_kind).get(type_name)
        config = target_cls.config_class.from_dict(config_data)
        component = target_cls(config)  # type: ignore[call-arg]
        weights = directory / WEIGHTS_NAME
        tensors = load_safetensors(weights) if weights.exists() else {}
        if not weights.exists() and component.state_tensors():
            raise FileNotFoundError(f"{directory} lacks {WEIGHTS_NAME}")
        component.load_state_tensors(tensors, strict=strict)
        return component  # type: ignore[return-value]


def resolve_pretrained(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None
) -> Path:
    """A local directory holding ``config.json``: the path itself, or a Hub snapshot.

    Raises:
        FileNotFoundError: If a local path lacks ``config.json``, or the id is neither a local
            path nor a reachable Hub repository.
    """
    path = Path(path_or_repo)
    if path.exists():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{path} holds no {CONFIG_NAME}; expected a directory written by save_pretrained"
            )
        return path
    text = str(path_or_repo)
    # Only a bare ``owner/name`` can be a Hub id; a mistyped local path (``runs/rvqq`` where
    # ``runs/`` exists, ``./x``, a Path object) must fail here, without touching the network.
    hub_like = (
        isinstance(path_or_repo, str)
        and not text.startswith(".")
        and not Path(text.split("/")[0]).is_dir()
    )
    if hub_like and re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(
                repo_id=text, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
            )
        except Exception as err:
            raise FileNotFoundError(
                f"{text!r} is not a local directory, and downloading it from the Hugging Face Hub "
                f"failed ({type(err).__name__}: {err})"
            ) from err
        return resolve_pretrained(local)
    raise FileNotFoundError(
        f"{text}: no such directory (expected a directory written by save_pretrained, or a Hub "
        "repo id 'owner/name')"
    )


def load_component(path_or_repo: str | os.PathLike[str], **kwargs: Any) -> Component:
    """Load any saved component, finding its kind and class from ``config.json``."""
    return Component.from_pretrained(path_or_repo, **kwargs)
