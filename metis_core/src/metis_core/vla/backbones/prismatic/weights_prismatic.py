"""Load Prismatic / OpenVLA checkpoints into :class:`PrismaticBackbone` by key mapping.

Two layouts are understood (see ``VLA_FACTS.md`` §2):

* ``"prismatic"`` — the native Prismatic training checkpoint
  (``checkpoints/latest-checkpoint.pt``: ``{"model": {"projector": ..., "llm_backbone": ...,
  "vision_backbone": ...}}``, or the same already flat): ``projector.{0,2,4}.*``, ``llm.model.*`` /
  ``llm.lm_head.weight``, and the timm towers under ``dino_featurizer.*`` / ``siglip_featurizer.*``
  (``featurizer.*`` for a one-tower model).
* ``"openvla"`` — the Hugging Face (``trust_remote_code``) layout of ``openvla/openvla-7b`` and
  the METIS HF checkpoints: ``projector.fc{1,2,3}.*``, ``language_model.model.*`` /
  ``language_model.lm_head.weight``, ``vision_backbone.featurizer.*`` (DINOv2, timm names) and
  ``vision_backbone.fused_featurizer.*`` (SigLIP, timm names).

The timm towers are mapped onto the ``transformers`` modules the backbone is built from: the
fused ``attn.qkv`` is split into ``q|k|v`` (rows ``0:H``, ``H:2H``, ``2H:3H``, weights and biases),
DINOv2's ``pos_embed`` without the class position (timm ``no_embed_class``) gets a class-position
row of **zeros** (exactly what timm computes: its class token carries no position embedding),
``reg_token`` becomes ``register_tokens``, ``ls1.gamma`` / ``ls1.scale_factor`` becomes
``layer_scale1.lambda1``, SigLIP's ``pos_embed (1, N, H)`` becomes ``position_embedding.weight
(N, H)`` and its ``attn_pool`` (``q`` and ``kv`` concatenated) becomes the ``head``. DINOv2's
``mask_token`` has no timm counterpart and keeps its current value (zeros when freshly built).

Every target name is looked up in the *installed* module tree (``backbone.state_dict()``), with
the known ``transformers`` 4 / 5 spellings as alternatives, so a future rename shows up as a
:class:`KeyMappingError` listing the keys instead of loading nothing. Nothing is unpickled:
``.pt`` files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from metis_core.io import CorruptFileError, atomic_directory, load_safetensors, save_safetensors

__all__ = [
    "KeyMappingError",
    "LoadReport",
    "detect_layout",
    "load_prismatic_weights",
    "prismatic_state_dict",
    "read_checkpoint",
    "save_prismatic_checkpoint",
]

Layout = Literal["prismatic", "openvla"]

#: Target keys a timm checkpoint never holds; they keep their current value.
_ALLOWED_MISSING_SUFFIXES = ("embeddings.mask_token",)
#: Source keys older ``transformers`` wrote that carry no weights (recomputed buffers).
_SKIPPED_SOURCE = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
#: Sub-dictionaries of the native checkpoint whose keys are used as they are.
_NATIVE_MODULES = ("projector", "llm_backbone", "vision_backbone")


class KeyMappingError(CorruptFileError):
    """A checkpoint's keys or shapes do not match the backbone; the message lists every key."""

    def __init__(
        self,
        message: str,
        *,
        unmapped: Iterable[str] = (),
        missing: Iterable[str] = (),
        mismatched: Iterable[str] = (),
    ) -> None:
        self.unmapped = sorted(unmapped)
        self.missing = sorted(missing)
        self.mismatched = sorted(mismatched)
        parts = [message]
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} checkpoint key(s) map to nothing in the backbone: " + ", ".join(self.unmapped))  # fmt: skip
        if self.missing:
            parts.append(f"{len(self.missing)} backbone key(s) not filled by the checkpoint: " + ", ".join(self.missing))  # fmt: skip
        if self.mismatched:
            parts.append(
                f"{len(self.mismatched)} shape mismatch(es): " + "; ".join(self.mismatched)
            )
        super().__init__("\n".join(parts))


@dataclass
class LoadReport:
    """What :func:`load_prismatic_weights` did.

    Args:
        layout: The layout read (``"prismatic"`` or ``"openvla"``).
        loaded: Backbone keys written from the checkpoint.
        kept: Backbone keys left as they were (e.g. DINOv2's ``mask_token``; with
            ``strict=False`` also every key the checkpoint did not fill).
        unmapped: Checkpoint keys that went nowhere (only with ``strict=False``).
        partial_rows: Backbone key → ``(rows copied, rows in the backbone)`` where the
            checkpoint's vocabulary is smaller (the other rows keep their values).
        filled: Backbone key → how a value the checkpoint lacks was made up.
        ignored: Checkpoint tensors under ``ignore_prefixes`` (e.g. ``action_decoder.*``), with
            the prefix kept, for the caller to load elsewhere.
        skipped: Checkpoint keys without weights that were dropped (``rotary_emb.inv_freq``).
    """

    layout: str
    loaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    partial_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    filled: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Link:
    """Backbone keys ``targets`` ⇄ checkpoint keys ``sources``.

    ``sources`` holds one tuple of accepted spellings per source tensor; the first spelling is
    the one :func:`prismatic_state_dict` writes.
    """

    kind: Literal["copy", "rows", "split", "concat", "class_row", "squeeze", "cls"]
    sources: tuple[tuple[str, ...], ...]
    targets: tuple[str, ...]
    extra: str = ""  # "cls": the position-embedding key whose class row is folded on export


# -- module-tree lookup -----------------------------------------------------------------------


class _Tree:
    """The installed backbone's state-dict keys and shapes, with spelling alternatives."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.shapes = {k: tuple(v.shape) for k, v in state.items()}
        self.unresolved: list[str] = []

    def pick(self, prefix: str, *candidates: str) -> str | None:
        for candidate in candidates:
            if prefix + candidate in self.shapes:
                return prefix + candidate
        self.unresolved.append(f"{prefix}{{{'|'.join(candidates)}}}")
        return None

    def prefix(self, tower: str, *candidates: str, probe: str) -> str:
        for candidate in candidates:
            if f"{tower}.{candidate}{probe}" in self.shapes:
                return f"{tower}.{candidate}"
        return f"{tower}.{candidates[0]}"

    def layers(self, container: str) -> list[int]:
        pattern = re.compile(re.escape(container) + r"(\d+)\.")
        found = {int(m.group(1)) for k in self.shapes if (m := pattern.match(k))}
        return sorted(found)


def _linear(
    links: list[_Link], tree: _Tree, src: str, prefix: str, *names: str, bias: bool = True
) -> None:
    suffixes = ("weight", "bias") if bias else ("weight",)
    for suffix in suffixes:
        target = tree.pick(prefix, *(f"{n}.{suffix}" for n in names))
        if target is not None:
            links.append(_Link("copy", ((f"{src}.{suffix}",),), (target,)))


def _split_qkv(links: list[_Link], tree: _Tree, src: str, prefix: str, names: tuple[tuple[str, ...], ...]) -> None:  # fmt: skip
    for suffix in ("weight", "bias"):
        targets = [tree.pick(prefix, *(f"{n}.{suffix}" for n in alternatives)) for alternatives in names]  # fmt: skip
        if all(t is not None for t in targets):
            links.append(_Link("split", ((f"{src}.{suffix}",),), tuple(targets)))  # type: ignore[arg-type]


def _dino_links(tree: _Tree, src: str, layout: Layout) -> list[_Link]:
    links: list[_Link] = []
    dst = "dino."
    emb = dst + "embeddings."
    cls = tree.pick(emb, "cls_token")
    pos = tree.pick(emb, "position_embeddings")
    if cls is not None:
        links.append(_Link("cls", ((f"{src}cls_token",),), (cls,), extra=pos or ""))
    if pos is not None:
        links.append(_Link("class_row", ((f"{src}pos_embed",),), (pos,)))
    reg = tree.pick(emb, "register_tokens")
    if reg is not None:
        links.append(_Link("copy", ((f"{src}reg_token",),), (reg,)))
    _linear(links, tree, f"{src}patch_embed.proj", emb, "patch_embeddings.projection")
    # transformers 5 names first, 4.x in brackets in VLA_FACTS §2.
    gammas = ("gamma", "scale_factor") if layout == "prismatic" else ("scale_factor", "gamma")
    container = "encoder.layer."
    for i in tree.layers(dst + container):
        block, layer = f"{src}blocks.{i}.", f"{dst}{container}{i}."
        _linear(links, tree, block + "norm1", layer, "norm1")
        _split_qkv(links, tree, block + "attn.qkv", layer, (
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
        ))  # fmt: skip
        _linear(
            links, tree, block + "attn.proj", layer, "attention.o_proj", "attention.output.dense"
        )
        for n in (1, 2):
            target = tree.pick(layer, f"layer_scale{n}.lambda1")
            if target is not None:
                links.append(
                    _Link("copy", (tuple(f"{block}ls{n}.{g}" for g in gammas),), (target,))
                )
        _linear(links, tree, block + "norm2", layer, "norm2")
        _linear(links, tree, block + "mlp.fc1", layer, "mlp.fc1")
        _linear(links, tree, block + "mlp.fc2", layer, "mlp.fc2")
    _linear(links, tree, f"{src}norm", dst, "layernorm")
    return links


def _siglip_links(tree: _Tree, src: str) -> list[_Link]:
    links: list[_Link] = []
    # transformers 5.x: no `vision_model.` wrapper; 4.x: `vision_model.`.
    dst = tree.prefix("siglip", "", "vision_model.", probe="embeddings.patch_embedding.weight")
    emb = dst + "embeddings."
    _linear(links, tree, f"{src}patch_embed.proj", emb, "patch_embedding")
    pos = tree.pick(emb, "position_embedding.weight")
    if pos is not None:
        links.append(_Link("squeeze", ((f"{src}pos_embed",),), (pos,)))
    container = "encoder.layers."
    for i in tree.layers(dst + container):
        block, layer = f"{src}blocks.{i}.", f"{dst}{container}{i}."
        _linear(links, tree, block + "norm1", layer, "layer_norm1")
        _split_qkv(links, tree, block + "attn.qkv", layer, (
            ("self_attn.q_proj",), ("self_attn.k_proj",), ("self_attn.v_proj",),
        ))  # fmt: skip
        _linear(links, tree, block + "attn.proj", layer, "self_attn.out_proj")
        _linear(links, tree, block + "norm2", layer, "layer_norm2")
        _linear(links, tree, block + "mlp.fc1", layer, "mlp.fc1")
        _linear(links, tree, block + "mlp.fc2", layer, "mlp.fc2")
    _linear(links, tree, f"{src}norm", dst, "post_layernorm")
    if any(k.startswith(dst + "head.") for k in tree.shapes):
        head, pool = dst + "head.", f"{src}attn_pool."
        probe = tree.pick(head, "probe")
        if probe is not None:
            links.append(_Link("copy", ((pool + "latent",),), (probe,)))
        for suffix in ("weight", "bias"):
            target = tree.pick(head, f"attention.in_proj_{suffix}")
            if target is not None:
                links.append(_Link("concat", ((f"{pool}q.{suffix}",), (f"{pool}kv.{suffix}",)), (target,)))  # fmt: skip
        _linear(links, tree, pool + "proj", head, "attention.out_proj")
        _linear(links, tree, pool + "norm", head, "layernorm")
        _linear(links, tree, pool + "mlp.fc1", head, "mlp.fc1")
        _linear(links, tree, pool + "mlp.fc2", head, "mlp.fc2")
    return links


def _links(tree: _Tree, layout: Layout) -> list[_Link]:
    """Every mapping between the backbone in ``tree`` and a checkpoint in ``layout``."""
    has_dino = any(k.startswith("dino.") for k in tree.shapes)
    has_siglip = any(k.startswith("siglip.") for k in tree.shapes)
    if layout == "prismatic":
        dino_src = "dino_featurizer." if has_siglip else "featurizer."
        siglip_src = "siglip_featurizer." if has_dino else "featurizer."
        projector = ("projector.0", "projector.2", "projector.4")
        llm = "llm."
    else:
        dino_src = "vision_backbone.featurizer."
        siglip_src = "vision_backbone.fused_featurizer." if has_dino else "vision_backbone.featurizer."  # fmt: skip
        projector = ("projector.fc1", "projector.fc2", "projector.fc3")
        llm = "language_model."
    links: list[_Link] = []
    if has_dino:
        links += _dino_links(tree, dino_src, layout)
    if has_siglip:
        links += _siglip_links(tree, siglip_src)
    for source, name in zip(projector, ("fc1", "fc2", "fc3"), strict=True):
        _linear(links, tree, source, "projector.", name)
    # The language model is a transformers causal LM on both sides: same names after the prefix.
    embeddings = {"llm.model.embed_tokens.weight", "llm.lm_head.weight"}
    for key in tree.shapes:
        if key.startswith("llm."):
            kind = "rows" if key in embeddings else "copy"
            links.append(_Link(kind, ((llm + key.removeprefix("llm."),),), (key,)))
    return links


# -- reading checkpoints ----------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as err:
        raise CorruptFileError(
            f"{path} holds something other than tensors and plain containers; it was refused "
            f"(read with torch.load(weights_only=True), nothing is unpickled): {err}"
        ) from err


def _flatten(data: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise CorruptFileError(
            f"{source}: expected a mapping of tensors, got {type(data).__name__}"
        )
    flat: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            # Native Prismatic: per-module state dicts; their keys already carry the submodule
            # name (`projector.0.weight`, `llm.model...`, `dino_featurizer...`).
            prefix = "" if key in _NATIVE_MODULES else f"{key}."
            for inner, tensor in _flatten(value, source).items():
                flat[prefix + inner] = tensor
        elif isinstance(value, torch.Tensor):
            flat[str(key)] = value
        else:
            raise CorruptFileError(
                f"{source}: key {key!r} holds a {type(value).__name__}, expected a tensor"
            )
    return flat


def read_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Flat ``{key: tensor}`` of a checkpoint: an in-memory dict (nested or flat), a ``.pt`` /
    ``.pth`` / ``.bin`` file (``weights_only``), a ``.safetensors`` file, or a directory with
    ``model.safetensors``, sharded ``model-0000x-of-0000y.safetensors`` (+ index) or a Prismatic
    run's ``checkpoints/latest-checkpoint.pt``.

    Raises:
        FileNotFoundError: If the path does not exist or the directory holds no weights.
        CorruptFileError: For an unreadable file or one holding non-tensor objects.
    """
    if isinstance(source, Mapping):
        return _flatten(source, "state dict")
    path = Path(source)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CorruptFileError(f"{index} is not a safetensors index: {err}") from err
            files = sorted(set(weight_map.values()))
        elif (path / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = sorted(p.name for p in path.glob("model-*-of-*.safetensors"))
        if files:
            flat: dict[str, torch.Tensor] = {}
            for name in files:
                shard = path / name
                if not shard.is_file():
                    raise FileNotFoundError(f"{path}: the index names shard {name}, which is missing")  # fmt: skip
                flat.update(load_safetensors(shard))
            return flat
        for candidate in (path / "checkpoints" / "latest-checkpoint.pt", path / "latest-checkpoint.pt"):  # fmt: skip
            if candidate.is_file():
                return _flatten(_torch_load(candidate), str(candidate))
        raise FileNotFoundError(
            f"{path} holds no weights: expected model.safetensors, model-*-of-*.safetensors "
            "(+ model.safetensors.index.json) or checkpoints/latest-checkpoint.pt"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _flatten(_torch_load(path), str(path))
    raise CorruptFileError(
        f"{path}: unknown checkpoint format {path.suffix!r}; expected .safetensors, .pt, .pth or .bin"
    )


def detect_layout(keys: Iterable[str]) -> Layout:
    """``"openvla"`` or ``"prismatic"`` from a checkpoint's keys.

    Raises:
        KeyMappingError: If the keys fit neither layout.
    """
    keys = list(keys)
    openvla = ("language_model.", "vision_backbone.", "projector.fc1.")
    native = ("llm.", "dino_featurizer.", "siglip_featurizer.", "featurizer.", "projector.0.")
    if any(k.startswith(openvla) for k in keys):
        return "openvla"
    if any(k.startswith(native) for k in keys):
        return "prismatic"
    sample = ", ".join(sorted(keys)[:8])
    raise KeyMappingError(
        "the checkpoint is in neither the OpenVLA/HF layout (language_model.*, vision_backbone.*, "
        f"projector.fc1.*) nor the native Prismatic layout (llm.*, *featurizer.*, projector.0.*); "
        f"first keys: {sample}"
    )


# -- loading ----------------------------------------------------------------------------------


def _first(present: Mapping[str, torch.Tensor], alternatives: tuple[str, ...]) -> str | None:
    return next((name for name in alternatives if name in present), None)


@torch.no_grad()
def load_prismatic_weights(
    backbone: torch.nn.Module,
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any],
    *,
    layout: Literal["auto", "prismatic", "openvla"] = "auto",
    strict: bool = True,
    ignore_prefixes: tuple[str, ...] = ("action_decoder.",),
) -> LoadReport:
    """Copy a Prismatic or OpenVLA checkpoint into a :class:`PrismaticBackbone`.

    Args:
        backbone: The backbone to fill (on CPU/GPU, or on the meta device: then the tensors are
            assigned instead of copied).
        state_dict_or_path: What :func:`read_checkpoint` accepts.
        layout: ``"prismatic"`` (native), ``"openvla"`` (HF) or ``"auto"`` (from the keys).
        strict: Raise unless every checkpoint key maps and every backbone key is filled
            (DINOv2's ``mask_token`` excepted); else report the gaps.
        ignore_prefixes: Checkpoint keys that are not the backbone's (the METIS action decoder);
            returned in :attr:`LoadReport.ignored`.

    Returns:
        A :class:`LoadReport`.

    Raises:
        KeyMappingError: Listing every unmapped checkpoint key, unfilled backbone key and shape
            mismatch (shape mismatches are raised also with ``strict=False``); also when the
            checkpoint's vocabulary is larger than the backbone's.
    """
    source = read_checkpoint(state_dict_or_path)
    if layout == "auto":
        layout = detect_layout(source)
    if layout not in ("prismatic", "openvla"):
        raise ValueError(f"layout must be 'auto', 'prismatic' or 'openvla', got {layout!r}")
    report = LoadReport(layout=layout)
    for key in list(source):
        if key.startswith(ignore_prefixes):
            report.ignored[key] = source.pop(key)
        elif _SKIPPED_SOURCE.search(key):
            source.pop(key)
            report.skipped.append(key)
    state = backbone.state_dict()
    tree = _Tree(state)
    links = _links(tree, layout)
    used: set[str] = set()
    values: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for link in links:
        names = [_first(source, alternatives) for alternatives in link.sources]
        if any(n is None for n in names):
            continue
        tensors = [source[n] for n in names]  # type: ignore[index]
        used.update(names)  # type: ignore[arg-type]
        try:
            produced = _forward(link, tensors, tree, report, state)
        except _MismatchError as err:
            mismatched.append(f"{', '.join(names)} → {', '.join(link.targets)}: {err}")  # type: ignore[arg-type]
            continue
        values.update(produced)
    for target, value in values.items():
        if tuple(value.shape) != tree.shapes[target]:
            mismatched.append(f"{target}: checkpoint gives {tuple(value.shape)}, the backbone has {tree.shapes[target]}")  # fmt: skip
    unmapped = sorted(set(source) - used)
    missing = sorted(k for k in state if k not in values and not k.endswith(_ALLOWED_MISSING_SUFFIXES))  # fmt: skip
    if tree.unresolved:
        unmapped += [f"(no installed module {u})" for u in tree.unresolved]
    if mismatched or (strict and (unmapped or missing)):
        raise KeyMappingError(
            f"cannot load the {layout!r} checkpoint into {type(backbone).__name__}",
            unmapped=unmapped if strict else (),
            missing=missing if strict else (),
            mismatched=mismatched,
        )
    _assign(backbone, state, values)
    report.loaded = sorted(values)
    report.kept = sorted(k for k in state if k not in values)
    report.unmapped = unmapped
    return report


class _MismatchError(ValueError):
    pass


def _forward(
    link: _Link,
    tensors: list[torch.Tensor],
    tree: _Tree,
    report: LoadReport,
    state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Checkpoint tensors → backbone tensors for one link."""
    first = tensors[0]
    target = link.targets[0]
    shape = tree.shapes[target]
    if link.kind in ("copy", "cls"):
        return {target: first}
    if link.kind == "rows":
        rows = int(first.shape[0])
        if first.dim() != 2 or first.shape[1:] != shape[1:]:
            raise _MismatchError(f"checkpoint {tuple(first.shape)}, backbone {shape}")
        if rows > shape[0]:
            raise _MismatchError(
                f"the checkpoint's vocabulary has {rows} rows, more than the backbone's {shape[0]}; "
                "resize the backbone's vocabulary first (resize_vocabulary)"
            )
        if rows == shape[0]:
            return {target: first}
        current = state[target]
        if current.device.type == "meta":
            # Note: nothing to keep on the meta device; the extra rows get the checkpoint's mean,
            # which is what resize_vocabulary would have given them.
            rest = first.float().mean(0, keepdim=True).to(first.dtype).expand(shape[0] - rows, -1)
        else:
            rest = current[rows:].to(device=first.device, dtype=first.dtype)
        report.partial_rows[target] = (rows, shape[0])
        return {target: torch.cat([first, rest], 0)}
    if link.kind == "split":
        if first.shape[0] % 3:
            raise _MismatchError(f"fused qkv has {first.shape[0]} rows, not a multiple of 3")
        return dict(zip(link.targets, first.chunk(3, dim=0), strict=True))
    if link.kind == "concat":
        return {target: torch.cat(tensors, 0)}
    if link.kind == "class_row":
        if first.dim() == 3 and first.shape[1] == shape[1] - 1:
            report.filled[target] = (
                "class-position row set to zeros (timm no_embed_class: the class token carries "
                "no position embedding)"
            )
            return {target: torch.cat([first.new_zeros(first.shape[0], 1, first.shape[2]), first], 1)}  # fmt: skip
        return {target: first}
    if link.kind == "squeeze":
        if first.dim() == 3 and first.shape[0] == 1:
            return {target: first[0]}
        return {target: first}
    raise AssertionError(link.kind)  # pragma: no cover


def _assign(backbone: torch.nn.Module, state: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]) -> None:  # fmt: skip
    on_meta = {k for k in values if state[k].device.type == "meta"}
    for key, value in values.items():
        if key not in on_meta:
            state[key].copy_(value)
    if on_meta:
        assigned = {k: values[k].to(state[k].dtype) for k in on_meta}
        result = backbone.load_state_dict(assigned, strict=False, assign=True)
        if result.unexpected_keys:  # pragma: no cover - keys come from state_dict()
            raise KeyMappingError("assigning on the meta device failed", unmapped=result.unexpected_keys)  # fmt: skip


# -- the inverse: backbone → checkpoint layout ------------------------------------------------


@torch.no_grad()
def prismatic_state_dict(
    backbone: torch.nn.Module, layout: Layout = "openvla", *, nested: bool = False
) -> dict[str, Any]:
    """The backbone's weights in a checkpoint layout (the inverse of :func:`load_prismatic_weights`).

    The towers are written with timm names: ``q|k|v`` fused into ``attn.qkv``, SigLIP's head as
    ``attn_pool`` (``q`` and ``kv`` split), ``pos_embed`` as ``(1, N, H)``; DINOv2's ``pos_embed``
    without the class row, whose value is folded into ``cls_token`` (timm's own conversion),
    so the outputs are unchanged after loading back (and the weights identical when the class row
    is zero, as after loading a timm checkpoint). ``mask_token`` is not written.

    Args:
        backbone: A :class:`PrismaticBackbone`.
        layout: ``"openvla"`` (HF) or ``"prismatic"`` (native).
        nested: Prismatic only: ``{"model": {"projector": ..., "llm_backbone": ...,
            "vision_backbone": ...}}`` as the training checkpoint holds it.

    Returns:
        ``{key: tensor}`` (detached, on the backbone's device), or the nested form.
    """
    if layout not in ("prismatic", "openvla"):
        raise ValueError(f"layout must be 'prismatic' or 'openvla', got {layout!r}")
    if nested and layout != "prismatic":
        raise ValueError("nested=True is the native Prismatic form; use layout='prismatic'")
    state = backbone.state_dict()
    tree = _Tree(state)
    links = _links(tree, layout)
    if tree.unresolved:
        raise KeyMappingError(
            f"the installed module tree lacks modules the {layout!r} layout needs",
            missing=tree.unresolved,
        )
    out: dict[str, torch.Tensor] = {}
    for link in links:
        names = [alternatives[0] for alternatives in link.sources]
        targets = [state[t].detach() for t in link.targets]
        if link.kind in ("copy", "rows"):
            out[names[0]] = targets[0].clone()
        elif link.kind == "squeeze":
            out[names[0]] = targets[0][None].clone()
        elif link.kind == "cls":
            fold = state[link.extra][:, :1] if link.extra else 0
            out[names[0]] = (targets[0] + fold).clone()
        elif link.kind == "class_row":
            out[names[0]] = targets[0][:, 1:].clone()
        elif link.kind == "split":
            out[names[0]] = torch.cat(targets, 0)
        elif link.kind == "concat":
            width = targets[0].shape[0] // 3
            out[names[0]] = targets[0][:width].clone()
            out[names[1]] = targets[0][width:].clone()
    if not nested:
        return out
    groups: dict[str, dict[str, torch.Tensor]] = {m: {} for m in _NATIVE_MODULES}
    for key, value in out.items():
        module = "projector" if key.startswith("projector.") else "llm_backbone" if key.startswith("llm.") else "vision_backbone"  # fmt: skip
        groups[module][key] = value
    return {"model": {k: v for k, v in groups.items() if v}}


def save_prismatic_checkpoint(
    backbone: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    layout: Layout = "openvla",
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the backbone in a checkpoint layout as safetensors (never pickle).

    ``layout="openvla"`` writes a directory with ``model.safetensors``, or with shards
    ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json`` when
    ``max_shard_bytes`` is given and exceeded; ``layout="prismatic"`` writes the flat native keys
    to one ``.safetensors`` file at ``path``.

    Returns:
        The path written.
    """
    tensors = prismatic_state_dict(backbone, layout)
    target = Path(path)
    if layout == "prismatic":
        if target.suffix != ".safetensors":
            raise ValueError(f"the native layout is written to a .safetensors file, got {target}")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        save_safetensors(target, tensors, metadata={"format": "pt", "layout": layout})
        return target
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    with atomic_directory(target, overwrite=overwrite) as staging:
        if len(shards) == 1:
            save_safetensors(staging / "model.safetensors", shards[0], metadata={"format": "pt"})
        else:
            weight_map = {}
            total = len(shards)
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{total:05d}.safetensors"
                save_safetensors(staging / name, shard, metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            nbytes = sum(v.numel() * v.element_size() for v in tensors.values())
            index = {"metadata": {"total_size": nbytes}, "weight_map": weight_map}
            (staging / "model.safetensors.index.json").write_text(
                json.dumps(index, indent=2) + "\n", encoding="utf-8"
            )
    return target
