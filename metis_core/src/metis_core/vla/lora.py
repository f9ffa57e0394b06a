"""LoRA post-training adapters for the METIS policy (the authors' post-training recipe, DESIGN §8).

:func:`apply_lora` injects peft LoRA layers, in place, into every ``nn.Linear`` of the requested
backbone components that takes part in the forward (the language model, ``lm_head`` included
by default, both vision towers up to the block the projector reads, the projector), freezes
everything else except the action head (trained fully, kept in float32) and returns a
:class:`LoraReport`. Target names are collected from the installed module tree, never from
hard-coded transformers names, and every requested component must match at least one module.

Adapter checkpoints (:func:`save_lora_adapter` / :func:`load_lora_policy`) hold the LoRA and
action-head weights and everything inference needs except the base weights, which are read from
the base checkpoint the adapter records (with a fingerprint check). :func:`merge_lora` folds the
adapters into the base weights in float32 and returns a plain :class:`MetisPolicy`;
:func:`load_policy` opens either kind of directory.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metis_core._optional import require
from metis_core.io import (
    CorruptFileError,
    atomic_directory,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from metis_core.vla.modeling_metis import MetisPolicy, load_sharded_safetensors

__all__ = [
    "ACTION_HEAD_FILE",
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "LORA_FILE",
    "BaseMismatchError",
    "ComponentReport",
    "LoraReport",
    "LoraSpec",
    "apply_lora",
    "assert_trainable_set",
    "base_fingerprint",
    "base_state_dict",
    "is_lora_adapter",
    "load_lora_policy",
    "load_policy",
    "lora_components",
    "lora_report",
    "merge_lora",
    "read_lora_meta",
    "save_lora_adapter",
]

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ACTION_HEAD_FILE = "action_head.safetensors"
LORA_FILE = "lora.json"
ADAPTER_NAME = "default"
_FORMAT = "metis-lora-adapter"
_FORMAT_VERSION = 1
#: Key prefix of peft's own adapter files (``PeftModel.save_pretrained``), kept for compatibility.
_PEFT_PREFIX = "base_model.model."
_INITS = {"gaussian": "gaussian", "default": True}


class BaseMismatchError(ValueError):
    """The base checkpoint is not the one an adapter was trained on."""


def _peft() -> Any:
    return require("peft", install="peft", feature="LoRA adapters")


# -- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    """What to adapt and how (defaults: the authors' post-training recipe).

    Args:
        r: LoRA rank.
        alpha: ``lora_alpha``; ``None`` → ``min(r, 16)`` (the release).
        dropout: LoRA dropout.
        init: ``"gaussian"`` (A ~ N(0, 1/r), B = 0) or ``"default"`` (Kaiming A, B = 0); both
            leave the outputs unchanged at init.
        components: Backbone components to adapt (``llm``, ``dino``, ``siglip``, ``projector``
            for Prismatic; ``llm``, ``vision`` and, for Idefics3, ``connector`` for ``hf_vlm``).
        include_lm_head: Also adapt the language model's output projection (the release does).
        train_action_head: Train the action head fully (else it is frozen too).
    """

    r: int = 32
    alpha: float | None = None
    dropout: float = 0.0
    init: str = "gaussian"
    components: tuple[str, ...] = ("llm", "dino", "siglip", "projector")
    include_lm_head: bool = True
    train_action_head: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if self.alpha is not None and (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not self.alpha > 0
        ):
            raise ValueError(f"alpha must be a positive number or None, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {sorted(_INITS)}, got {self.init!r}")
        components = self.components
        if isinstance(components, str) or not isinstance(components, (tuple, list)):
            raise ValueError(f"components must be a sequence of names, got {components!r}")
        if not components or not all(isinstance(c, str) and c for c in components):
            raise ValueError(f"components must be non-empty names, got {components!r}")
        if len(set(components)) != len(components):
            raise ValueError(f"components are repeated: {list(components)}")
        object.__setattr__(self, "components", tuple(components))
        for name in ("include_lm_head", "train_action_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def lora_alpha(self) -> float:
        """The effective ``lora_alpha``."""
        return float(min(self.r, 16) if self.alpha is None else self.alpha)

    @property
    def scaling(self) -> float:
        """``lora_alpha / r``, the factor on ``B @ A``."""
        return self.lora_alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["components"] = list(self.components)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LoraSpec fields {unknown}; known: {sorted(known)}")
        fields = dict(data)
        if "components" in fields and isinstance(fields["components"], list):
            fields["components"] = tuple(fields["components"])
        return cls(**fields)

    def lora_config(self, target_modules: Sequence[str]) -> Any:
        """The ``peft.LoraConfig`` for these (full, backbone-relative) module names."""
        return _peft().LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=float(self.dropout),
            init_lora_weights=_INITS[self.init],
            target_modules=sorted(target_modules),
            bias="none",
        )


# -- components and targets --------------------------------------------------------------------


@dataclass
class _Component:
    name: str
    module: nn.Module
    prefix: str  # backbone-relative path ("" for the whole backbone)
    skip_prefixes: tuple[str, ...] = ()  # parts of `prefix` that belong to other components
    feature_cutoff: int | None = None  # vision tower: blocks [0, cutoff) are read
    blocks_prefix: str | None = None


def _module_names(root: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in root.named_modules()}


def _embeddings(module: nn.Module, which: str) -> nn.Module | None:
    """``module.get_<which>_embeddings()`` (``input`` / ``output``), or ``None`` if it has none."""
    getter = getattr(module, f"get_{which}_embeddings", None)
    if not callable(getter):
        return None
    try:
        out = getter()
    except (AttributeError, NotImplementedError):
        return None
    return out if isinstance(out, nn.Module) else None


def _output_embeddings(module: nn.Module) -> nn.Module | None:
    return _embeddings(module, "output")


def _blocks(tower: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The tower's list of transformer blocks (the ModuleList as long as its layer count)."""
    layers = getattr(getattr(tower, "config", None), "num_hidden_layers", None)
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and layers is not None and len(module) == layers:
            return name, module
    return None


def lora_components(backbone: nn.Module) -> dict[str, _Component]:
    """The components of a backbone LoRA can target, found from its module tree.

    Prismatic: its direct children (``dino``, ``siglip``, ``projector``, ``llm``); the vision
    towers are read at ``config.feature_layer``, so only their blocks before that layer take
    part. ``hf_vlm``: ``vision`` (and ``connector``) from the backbone's vision modules, and
    ``llm`` = everything else (text model and ``lm_head``).
    """
    names = _module_names(backbone)
    components: dict[str, _Component] = {}
    vision_modules = getattr(backbone, "_vision_modules", None)
    if callable(vision_modules):
        prefixes = []
        for name, module in vision_modules():
            components[name] = _Component(name, module, names[id(module)])
            prefixes.append(names[id(module)])
        components["llm"] = _Component("llm", backbone, "", skip_prefixes=tuple(prefixes))
        return components
    feature_layer = getattr(getattr(backbone, "config", None), "feature_layer", None)
    for name, module in backbone.named_children():
        if module is None:
            continue
        component = _Component(name, module, name)
        is_lm = _output_embeddings(module) is not None
        if feature_layer is not None and not is_lm and hasattr(getattr(module, "config", None), "num_hidden_layers"):  # fmt: skip
            found = _blocks(module)
            if found is None:
                raise ValueError(
                    f"cannot find the transformer blocks of the vision tower {name!r} "
                    f"({type(module).__name__}: no ModuleList of config.num_hidden_layers "
                    "entries), so the blocks past the feature layer cannot be excluded"
                )
            blocks_name, blocks = found
            n = len(blocks)
            cutoff = n + 1 + feature_layer if feature_layer < 0 else feature_layer
            component.feature_cutoff = cutoff
            component.blocks_prefix = f"{name}.{blocks_name}"
        components[name] = component
    return components


def _plan(backbone: nn.Module, spec: LoraSpec) -> dict[str, dict[str, Any]]:
    """Per requested component: the Linear modules to adapt and those excluded (with why)."""
    available = lora_components(backbone)
    missing = [c for c in spec.components if c not in available]
    if missing:
        raise ValueError(
            f"LoRA components {missing} are not in the {type(backbone).__name__} backbone "
            f"(searched its module tree; components there: {sorted(available)})"
        )
    lm_head, lm_owner = None, None
    for module in backbone.modules():
        lm_head = _output_embeddings(module)
        if isinstance(lm_head, nn.Linear):
            lm_owner = module
            break
        lm_head = None
    names = _module_names(backbone)
    lm_head_name = names.get(id(lm_head)) if lm_head is not None else None
    plan: dict[str, dict[str, Any]] = {}
    for cname in spec.components:
        component = available[cname]
        targets: list[str] = []
        excluded: list[tuple[str, str]] = []
        searched = 0
        scope = component.prefix
        for name, module in backbone.named_modules():
            if scope and not (name == scope or name.startswith(scope + ".")):
                continue
            if any(name == p or name.startswith(p + ".") for p in component.skip_prefixes):
                continue
            if not isinstance(module, nn.Linear):
                continue
            searched += 1
            if name == lm_head_name and not spec.include_lm_head:
                excluded.append((name, "lm_head (include_lm_head=False)"))
                continue
            if name == lm_head_name:
                inputs = _input_embeddings(lm_owner)
                if inputs is not None and inputs.weight is module.weight:
                    raise ValueError(
                        f"{name} is tied to the input embeddings: merging a LoRA on it would also "
                        "change the embeddings; use LoraSpec(include_lm_head=False)"
                    )
            if component.feature_cutoff is not None:
                reason = _unused_reason(name, component)
                if reason is not None:
                    excluded.append((name, reason))
                    continue
            targets.append(name)
        if not targets:
            raise ValueError(
                f"LoRA component {cname!r} matched no nn.Linear that takes part in the forward "
                f"(searched {searched} nn.Linear modules under {scope or 'the backbone'!r}"
                + (f", excluded: {[n for n, _ in excluded][:6]}" if excluded else "")
                + ")"
            )
        plan[cname] = {"targets": targets, "excluded": excluded}
    return plan


def _input_embeddings(module: nn.Module) -> nn.Module | None:
    return _embeddings(module, "input")


def _unused_reason(name: str, component: _Component) -> str | None:
    """Why a Linear of a vision tower gets no gradient, or ``None`` when it is used."""
    blocks = component.blocks_prefix
    if blocks is None or component.feature_cutoff is None:
        return None
    if name.startswith(blocks + "."):
        index = int(name[len(blocks) + 1 :].split(".", 1)[0])
        if index >= component.feature_cutoff:
            return (
                f"block {index}: past the feature layer (the projector reads hidden state "
                f"{component.feature_cutoff}, the output of block {component.feature_cutoff - 1})"
            )
        return None
    relative = name[len(component.prefix) + 1 :]
    if any("embed" in part for part in relative.split(".")):
        return None
    return "after the encoder blocks (final norm / pooling head): not in the forward"


# -- the report --------------------------------------------------------------------------------


@dataclass
class ComponentReport:
    """LoRA on one backbone component.

    Args:
        name: Component name.
        modules: Number of ``nn.Linear`` adapted.
        lora_parameters: LoRA parameters (``r · (in + out)`` per adapted Linear).
        base_parameters: Parameters of the component itself (frozen).
        targets: Backbone-relative names of the adapted modules.
        excluded: ``(name, reason)`` of the Linear modules left out.
    """

    name: str
    modules: int
    lora_parameters: int
    base_parameters: int
    targets: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["excluded"] = [list(e) for e in self.excluded]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComponentReport:
        fields = dict(data)
        fields["excluded"] = [tuple(e) for e in fields.get("excluded", [])]
        return cls(**fields)


@dataclass
class LoraReport:
    """What :func:`apply_lora` adapted and what is trainable.

    Args:
        spec: The spec applied.
        components: Per component, a :class:`ComponentReport`.
        action_head_parameters: Parameters of the action head (trained fully, or frozen).
        trainable_parameters: LoRA + action head (when trained).
        total_parameters: Backbone (LoRA included) + action head; the frozen dynamics
            tokenizers are not counted.
    """

    spec: LoraSpec
    components: dict[str, ComponentReport]
    action_head_parameters: int
    trainable_parameters: int
    total_parameters: int

    @property
    def lora_parameters(self) -> int:
        return sum(c.lora_parameters for c in self.components.values())

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_parameters / max(self.total_parameters, 1)

    @property
    def targets(self) -> list[str]:
        return sorted(t for c in self.components.values() for t in c.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "components": {k: v.to_dict() for k, v in self.components.items()},
            "action_head_parameters": self.action_head_parameters,
            "lora_parameters": self.lora_parameters,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "trainable_fraction": self.trainable_fraction,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraReport:
        return cls(
            spec=LoraSpec.from_dict(data["spec"]),
            components={
                k: ComponentReport.from_dict(v) for k, v in dict(data["components"]).items()
            },
            action_head_parameters=int(data["action_head_parameters"]),
            trainable_parameters=int(data["trainable_parameters"]),
            total_parameters=int(data["total_parameters"]),
        )

    def table(self) -> str:
        """A printable text table."""
        s = self.spec
        head = "trained fully (fp32)" if s.train_action_head else "frozen"
        lines = [
            f"LoRA r={s.r} alpha={s.lora_alpha:g} dropout={s.dropout:g} init={s.init} "
            f"lm_head={'on' if s.include_lm_head else 'off'}",
            f"{'component':<14}{'adapted':>9}{'excluded':>10}{'LoRA params':>15}{'base params':>15}",
        ]
        for c in self.components.values():
            lines.append(
                f"{c.name:<14}{c.modules:>9}{len(c.excluded):>10}{c.lora_parameters:>15,}"
                f"{c.base_parameters:>15,}"
            )
        lines.append(f"{'LoRA total':<33}{self.lora_parameters:>15,}")
        lines.append(f"{'action head':<33}{self.action_head_parameters:>15,}  {head}")
        lines.append(
            f"trainable {self.trainable_parameters:,} of {self.total_parameters:,} "
            f"({100 * self.trainable_fraction:.3f} %)"
        )
        reasons: dict[tuple[str, str], int] = {}
        for c in self.components.values():
            for _, reason in c.excluded:
                reasons[(c.name, reason)] = reasons.get((c.name, reason), 0) + 1
        for (name, reason), count in reasons.items():
            lines.append(f"excluded from {name}: {count} Linear — {reason}")
        return "\n".join(lines)


# -- apply -------------------------------------------------------------------------------------


@dataclass
class _LoraState:
    spec: LoraSpec
    report: LoraReport
    config: Any  # the peft LoraConfig
    requires_grad: dict[str, bool]  # before apply_lora, by canonical parameter name


def _tuner_layers(root: nn.Module) -> list[tuple[str, nn.Module]]:
    base = _peft().tuners.tuners_utils.BaseTunerLayer
    return [(n, m) for n, m in root.named_modules() if isinstance(m, base)]


def _lora_parameter_names(policy: nn.Module) -> set[str]:
    names = set()
    for mname, module in _tuner_layers(policy):
        for attr in module.adapter_layer_names:
            sub = getattr(module, attr, None)
            if isinstance(sub, nn.Module):
                names.update(f"{mname}.{attr}.{p}" for p, _ in sub.named_parameters())
    return names


def _canonical(name: str) -> str:
    return name.replace(".base_layer.", ".")


def _state(policy: MetisPolicy) -> _LoraState:
    state = getattr(policy, "_metis_lora", None)
    if state is None:
        raise ValueError("this policy carries no LoRA adapters (call apply_lora first)")
    return state


def _count(module: nn.Module, skip: set[int] | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if skip is None or id(p) not in skip)


def lora_report(policy: MetisPolicy) -> LoraReport:
    """The report of a policy :func:`apply_lora` adapted (counts from the live modules)."""
    return _state(policy).report


def _build_report(policy: MetisPolicy, spec: LoraSpec, plan: Mapping[str, Any]) -> LoraReport:
    backbone = policy.backbone
    lora_names = _lora_parameter_names(policy)
    lora_ids = {id(p) for n, p in policy.named_parameters() if n in lora_names}
    available = lora_components(backbone)
    components = {}
    for cname, entry in plan.items():
        lora = 0
        for target in entry["targets"]:
            layer = backbone.get_submodule(target)
            lora += sum(p.numel() for p in layer.parameters() if id(p) in lora_ids)
        comp = available[cname]
        module_params = {id(p): p for p in comp.module.parameters()}
        for skip in comp.skip_prefixes:
            for p in backbone.get_submodule(skip).parameters():
                module_params.pop(id(p), None)
        base = sum(p.numel() for i, p in module_params.items() if i not in lora_ids)
        components[cname] = ComponentReport(
            name=cname,
            modules=len(entry["targets"]),
            lora_parameters=lora,
            base_parameters=base,
            targets=list(entry["targets"]),
            excluded=list(entry["excluded"]),
        )
    head = _count(policy.action_head)
    lora_total = sum(c.lora_parameters for c in components.values())
    return LoraReport(
        spec=spec,
        components=components,
        action_head_parameters=head,
        trainable_parameters=lora_total + (head if spec.train_action_head else 0),
        total_parameters=_count(backbone) + head,
    )


def _inject(policy: MetisPolicy, spec: LoraSpec, plan: Mapping[str, Any]) -> LoraReport:
    peft = _peft()
    if _tuner_layers(policy):
        raise ValueError("the policy already carries adapters; merge_lora or reload it first")
    before = {_canonical(n): p.requires_grad for n, p in policy.named_parameters()}
    targets = [t for entry in plan.values() for t in entry["targets"]]
    config = spec.lora_config(targets)
    peft.inject_adapter_in_model(config, policy.backbone, adapter_name=ADAPTER_NAME)
    base = peft.tuners.tuners_utils.BaseTunerLayer
    not_adapted = [t for t in targets if not isinstance(policy.backbone.get_submodule(t), base)]
    if not_adapted:
        raise RuntimeError(f"peft did not adapt {not_adapted[:8]} ({len(not_adapted)} modules)")
    lora_names = _lora_parameter_names(policy)
    for name, param in policy.named_parameters():
        param.requires_grad_(
            name in lora_names or (spec.train_action_head and name.startswith("action_head."))
        )
    policy.action_head.float()
    report = _build_report(policy, spec, plan)
    policy._metis_lora = _LoraState(spec=spec, report=report, config=config, requires_grad=before)
    assert_trainable_set(policy, report)
    return report


def apply_lora(policy: MetisPolicy, spec: LoraSpec | None = None) -> LoraReport:
    """Inject LoRA adapters into ``policy.backbone`` in place and freeze all but them and the
    action head.

    Every ``nn.Linear`` of the requested components that takes part in the forward is adapted;
    in a vision tower read at ``feature_layer`` (Prismatic: ``-2``) the blocks past that layer
    and the modules after the encoder (DINOv2's final layernorm, SigLIP's post-layernorm and
    pooling head) get no gradient and are excluded. The action head is not wrapped.

    Returns:
        A :class:`LoraReport` (also kept on the policy: :func:`lora_report`).

    Raises:
        ValueError: For a requested component that is not in the backbone or matches no
            module (naming it and what was searched), a tied ``lm_head``, or a policy that
            already carries adapters.
    """
    spec = spec or LoraSpec()
    plan = _plan(policy.backbone, spec)
    return _inject(policy, spec, plan)


def assert_trainable_set(policy: MetisPolicy, report: LoraReport | None = None) -> None:
    """Check that the parameters with ``requires_grad`` are exactly the LoRA parameters and (when
    trained) the action head's, and that their count is the report's.

    Raises:
        ValueError: Naming the unexpected trainable and the unexpectedly frozen parameters.
    """
    report = report or lora_report(policy)
    lora_names = _lora_parameter_names(policy)
    expected = set(lora_names)
    if report.spec.train_action_head:
        expected |= {f"action_head.{n}" for n, _ in policy.action_head.named_parameters()}
    params = dict(policy.named_parameters())
    actual = {n for n, p in params.items() if p.requires_grad}
    extra, frozen = sorted(actual - expected), sorted(expected - actual)
    if extra or frozen:
        raise ValueError(
            f"the trainable set is not LoRA + action head: {len(extra)} unexpected trainable "
            f"{extra[:10]}, {len(frozen)} unexpectedly frozen {frozen[:10]}"
        )
    count = sum(params[n].numel() for n in actual)
    if count != report.trainable_parameters:
        raise ValueError(
            f"{count:,} trainable parameters but the report says {report.trainable_parameters:,}"
        )


def base_state_dict(policy: MetisPolicy, *, include_action_head: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """The frozen base weights under their plain names (LoRA parameters left out, peft's
    ``base_layer`` removed from the names): the keys of a fresh policy's backbone."""
    lora = _lora_parameter_names(policy)
    out = {}
    for name, tensor in policy.state_dict().items():
        if name in lora or name.startswith(("motion_tokenizer.", "visual_tokenizer.")):
            continue
        if name.startswith("action_head.") and not include_action_head:
            continue
        out[_canonical(name)] = tensor
    return out


# -- base checkpoints --------------------------------------------------------------------------


def _weight_files(base: Path) -> list[Path]:
    single = base / "model.safetensors"
    index = base / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        data = read_json(index)
        shards = sorted(set(dict(data.get("weight_map", {})).values()))
        return [index] + [base / s for s in shards]
    raise FileNotFoundError(
        f"{base} holds neither model.safetensors nor model.safetensors.index.json "
        "(expected a full METIS checkpoint written by MetisPolicy.save_pretrained)"
    )


@functools.lru_cache(maxsize=16)
def _fingerprint_cached(key: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, size, _ in key:
        digest.update(f"{Path(path).name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def base_fingerprint(base: str | os.PathLike[str]) -> str:
    """sha256 over the base checkpoint's weight files (names, sizes and bytes), cached per
    file size and modification time."""
    files = _weight_files(Path(base))
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f} (listed by the base checkpoint) is missing")
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint_cached(key)


def _check_base_matches(policy: MetisPolicy, base: Path) -> None:
    """The policy's frozen weights equal the base checkpoint's (cast to the policy's dtype)."""
    from safetensors import safe_open

    live = base_state_dict(policy)
    seen: set[str] = set()
    differ: list[str] = []
    for path in _weight_files(base):
        if path.name.endswith(".json"):
            continue
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if key.startswith("action_head."):
                    continue
                seen.add(key)
                if key not in live:
                    differ.append(key)
                    continue
                mine = live[key]
                stored = handle.get_tensor(key).to(device=mine.device, dtype=mine.dtype)
                if stored.shape != mine.shape or not torch.equal(stored, mine):
                    differ.append(key)
    differ += sorted(set(live) - seen)
    if differ:
        raise BaseMismatchError(
            f"the policy's frozen weights are not those of the base checkpoint {base}: "
            f"{len(differ)} tensors differ, e.g. {differ[:5]} (save the base with "
            "MetisPolicy.save_pretrained before apply_lora and pass that directory)"
        )


# -- save / load -------------------------------------------------------------------------------


def is_lora_adapter(path: str | os.PathLike[str]) -> bool:
    """Whether a directory is an adapter written by :func:`save_lora_adapter`."""
    return (Path(path) / LORA_FILE).is_file()


def save_lora_adapter(
    policy: MetisPolicy,
    directory: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str],
    overwrite: bool = True,
    verify_base: bool = True,
) -> Path:
    """Write the adapters of ``policy`` into one directory, atomically.

    Files: ``adapter_config.json`` (peft's ``LoraConfig``), ``adapter_model.safetensors`` (the
    LoRA weights under peft's key layout ``base_model.model.<module>.lora_A/B.weight``),
    ``action_head.safetensors``, ``lora.json`` (spec, report, base path and fingerprint) and,
    as :meth:`MetisPolicy.save_pretrained` writes them, ``config.json``, ``tokenizer/``,
    ``motion_tokenizer/``, ``visual_tokenizer/``, ``normalization.json`` — all but the base
    weights.

    Args:
        policy: A policy :func:`apply_lora` adapted (and trained).
        directory: Target directory.
        base: The full checkpoint the adapters were applied to.
        overwrite: Replace an existing directory.
        verify_base: Check that the policy's frozen weights are the base checkpoint's (reads
            the base once).

    Raises:
        BaseMismatchError: If ``verify_base`` and the frozen weights differ from ``base``'s.
    """
    from metis_core import __version__

    peft = _peft()
    state = _state(policy)
    base_path = Path(base)
    fingerprint = base_fingerprint(base_path)
    if verify_base:
        _check_base_matches(policy, base_path)
    weights = peft.get_peft_model_state_dict(
        policy.backbone, adapter_name=ADAPTER_NAME, save_embedding_layers=False
    )
    weights = {_PEFT_PREFIX + k: v for k, v in weights.items()}
    config = copy.deepcopy(state.config)
    config.base_model_name_or_path = str(base_path.resolve())
    # peft shortens long target lists to matching suffixes on injection; record the full names
    config.target_modules = sorted(state.report.targets)
    meta = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "adapter_name": ADAPTER_NAME,
        "spec": state.spec.to_dict(),
        "base": {"path": str(base_path.resolve()), "fingerprint": fingerprint},
        "report": state.report.to_dict(),
        "metis_core_version": __version__,
        "peft_version": peft.__version__,
    }
    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as staging:
        config.save_pretrained(str(staging))
        save_safetensors(staging / ADAPTER_WEIGHTS_FILE, weights, metadata={"format": "pt"})
        save_safetensors(staging / ACTION_HEAD_FILE, policy.action_head.state_dict(), metadata={"format": "pt"})  # fmt: skip
        policy._save_parts(staging)
        write_json(staging / LORA_FILE, meta)
    return target


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(f"no such directory: {path} (expected a METIS LoRA adapter)")
    meta_file = path / LORA_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no {LORA_FILE}; not a METIS LoRA adapter")
    meta = read_json(meta_file)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise CorruptFileError(f"{meta_file}: not a METIS LoRA adapter")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise CorruptFileError(f"{meta_file}: format version {meta.get('format_version')!r}, this library reads {_FORMAT_VERSION}")  # fmt: skip
    return meta


def load_lora_policy(
    directory: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    check_fingerprint: bool = True,
) -> MetisPolicy:
    """Load an adapter written by :func:`save_lora_adapter` onto its base checkpoint.

    The policy is built from the adapter directory's config, tokenizers and normalisation (the
    post-training statistics), the backbone weights are read from the base checkpoint (its
    recorded path unless ``base`` is given), then the adapters are injected and the LoRA and
    action-head weights loaded. The result is in eval mode, adapters unmerged.

    Raises:
        FileNotFoundError: If the adapter or the base checkpoint is missing.
        BaseMismatchError: If the base checkpoint's fingerprint is not the recorded one.
        CorruptFileError: For adapter files that do not fit the model.
    """
    peft = _peft()
    path = Path(directory)
    meta = _read_meta(path)
    base_path = Path(base) if base is not None else Path(meta["base"]["path"])
    if not base_path.is_dir():
        raise FileNotFoundError(
            f"the base checkpoint {base_path} of adapter {path} is missing; pass base=<dir>"
        )
    if check_fingerprint:
        found = base_fingerprint(base_path)
        if found != meta["base"]["fingerprint"]:
            raise BaseMismatchError(
                f"{base_path} is not the base checkpoint adapter {path} was trained on: its "
                f"weights fingerprint is {found}, the adapter records {meta['base']['fingerprint']}"
                f" (from {meta['base']['path']})"
            )
    policy = MetisPolicy._from_parts(path)
    tensors = load_sharded_safetensors(base_path)
    backbone = {k: v for k, v in tensors.items() if k.startswith("backbone.")}
    expected = {k for k in policy.state_dict() if k.startswith("backbone.")}
    if set(backbone) != expected:
        raise CorruptFileError(
            f"the base weights in {base_path} do not fit the adapter's config: missing "
            f"{sorted(expected - set(backbone))[:8]}, unexpected {sorted(set(backbone) - expected)[:8]}"
        )
    policy.load_state_dict(backbone, strict=False)
    del tensors, backbone
    spec = LoraSpec.from_dict(meta["spec"])
    plan = _plan(policy.backbone, spec)
    recorded = peft.LoraConfig.from_pretrained(str(path))
    targets = sorted(t for e in plan.values() for t in e["targets"])
    if sorted(recorded.target_modules) != targets:
        new, gone = sorted(set(targets) - set(recorded.target_modules)), sorted(set(recorded.target_modules) - set(targets))  # fmt: skip
        raise CorruptFileError(
            f"{path / ADAPTER_CONFIG_FILE}: the adapter's target modules differ from this "
            f"model's module tree (only here: {new[:6]}, only in the adapter: {gone[:6]}); was it "
            "saved with another transformers version?"
        )
    _inject(policy, spec, plan)
    weights = load_safetensors(path / ADAPTER_WEIGHTS_FILE)
    weights = {k.removeprefix(_PEFT_PREFIX): v for k, v in weights.items()}
    expected_lora = set(peft.get_peft_model_state_dict(policy.backbone, adapter_name=ADAPTER_NAME, save_embedding_layers=False))  # fmt: skip
    if set(weights) != expected_lora:
        raise CorruptFileError(
            f"{path / ADAPTER_WEIGHTS_FILE}: missing {sorted(expected_lora - set(weights))[:6]}, "
            f"unexpected {sorted(set(weights) - expected_lora)[:6]}"
        )
    result = peft.set_peft_model_state_dict(policy.backbone, weights, adapter_name=ADAPTER_NAME)
    if result.unexpected_keys:
        raise CorruptFileError(f"{path / ADAPTER_WEIGHTS_FILE}: unexpected {result.unexpected_keys[:6]}")  # fmt: skip
    head = load_safetensors(path / ACTION_HEAD_FILE)
    try:
        policy.action_head.load_state_dict(head, strict=True)
    except RuntimeError as err:
        raise CorruptFileError(f"{path / ACTION_HEAD_FILE} does not fit the action head: {err}") from err  # fmt: skip
    policy.action_head.float()
    policy.eval()
    return policy


def load_policy(
    path: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None
) -> MetisPolicy:
    """A full checkpoint (:meth:`MetisPolicy.from_pretrained`) or an adapter directory
    (:func:`load_lora_policy`, adapters unmerged)."""
    if is_lora_adapter(path):
        return load_lora_policy(path, base=base)
    if base is not None:
        raise ValueError(f"{path} is a full checkpoint; base= applies to LoRA adapters only")
    return MetisPolicy.from_pretrained(path)


# -- merge -------------------------------------------------------------------------------------


def _backbone_dtype(backbone: nn.Module) -> torch.dtype:
    for p in backbone.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def merge_lora(policy: MetisPolicy, *, dtype: torch.dtype | None = None) -> MetisPolicy:
    """Fold the adapters into the base weights, in place, and return the plain policy.

    The backbone is cast to float32 first when it is in lower precision (bf16 merges lose
    precision, peft#1388), merged with peft (``safe_merge``), the LoRA modules replaced by their
    base layers, then cast to ``dtype`` (default: the dtype it had). The state-dict keys are a
    fresh policy's, so ``save_pretrained`` / ``from_pretrained`` round-trip it; the
    ``requires_grad`` flags are restored to what they were before :func:`apply_lora`.
    """
    state = _state(policy)
    backbone = policy.backbone
    original = _backbone_dtype(backbone)
    if original != torch.float32:
        backbone.float()
    for name, module in _tuner_layers(backbone):
        module.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
        parent_name, _, attr = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, attr, module.get_base_layer())
    if _tuner_layers(backbone):
        raise RuntimeError("LoRA modules are left after merging")
    if hasattr(backbone, "peft_config"):
        del backbone.peft_config
    target = original if dtype is None else dtype
    if target != torch.float32:
        policy.cast_backbone(target)
    for name, param in policy.named_parameters():
        param.requires_grad_(state.requires_grad.get(name, True))
    del policy._metis_lora
    return policy


def read_lora_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``lora.json`` of an adapter directory (spec, report, base path and fingerprint)."""
    return _read_meta(Path(directory))
