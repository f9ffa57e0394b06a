"""The MAP action decoder: attention pooling over the dynamics-token and image states.

The decoder of METIS (and UniVLA) reads the language model's last-layer hidden states. A first
pooling block summarises the image positions into one vector; a second pools the 44 dynamics
tokens with that vector added to its learned query; the result, concatenated with an MLP
embedding of the proprio state, is mapped linearly to a chunk of ``C × 48`` actions. The head
always computes in float32, whatever the backbone's dtype. Module names follow the authors'
checkpoints (``visual_pool``, ``attn_pool``, ``proprio_proj``, ``proj``) so that their decoder
weights load by name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metis_core.interfaces import ActionHead
from metis_core.vla.action_heads.map_decoder.configuration_map_decoder import MAPDecoderConfig

__all__ = ["MAPBlock", "MAPDecoder"]


class _RMSNorm(nn.Module):
    """``x / ‖x‖ · √d · g`` (the MAP blocks' norm; parameter ``g``)."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps) * self.scale * self.g


class _SwiGLU(nn.Module):
    """``Linear(d, 2m)`` split into value and gate, ``value · silu(gate)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.project(x).chunk(2, dim=-1)
        return value * F.silu(gate)


class _PoolingAttention(nn.Module):
    """Cross attention from the latent queries to the projected inputs (``q``, ``kv``, ``proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, queries: torch.Tensor, inputs: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, count, dim = queries.shape
        head_dim = dim // self.heads
        q = self.q(queries).view(batch, count, self.heads, head_dim).transpose(1, 2)
        k, v = self.kv(inputs).view(batch, inputs.shape[1], 2, self.heads, head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, count, dim))


class MAPBlock(nn.Module):
    """Multi-head attention pooling: one learned query attends to the projected inputs.

    Post-norm residual attention then a residual SwiGLU MLP.

    Args:
        input_dim: Width of the inputs.
        dim: Width of the block.
        heads: Attention heads.
        mlp_dim: SwiGLU width.
    """

    def __init__(self, input_dim: int, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(input_dim, dim)
        self.latents = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.attn = _PoolingAttention(dim, heads)
        self.attn_norm = _RMSNorm(dim)
        self.mlp = nn.Sequential(_SwiGLU(dim, mlp_dim), nn.Linear(mlp_dim, dim))
        self.mlp_norm = _RMSNorm(dim)

    def forward(
        self,
        inputs: torch.Tensor,
        *,
        init_embed: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, N, input_dim)`` → ``(B, dim)``; ``init_embed (B, dim)`` is added to the query."""
        latents = self.latents.unsqueeze(0).expand(inputs.shape[0], -1, -1)
        if init_embed is not None:
            latents = latents + init_embed.unsqueeze(1)
        projected = self.projection(inputs)
        latents = self.attn_norm(latents + self.attn(latents, projected, mask))
        latents = self.mlp_norm(latents + self.mlp(latents))
        return latents.squeeze(1)


class MAPDecoder(ActionHead):
    """Dynamics-token states (+ image states, + proprio) → ``(B, C, 48)`` actions.

    Args:
        config: Sizes (defaults: the authors' decoder at chunk 30).
    """

    name = "map_decoder"
    config_class = MAPDecoderConfig

    def __init__(self, config: MAPDecoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.attn_pool = MAPBlock(c.input_dim, c.hidden_dim, c.num_heads, c.mlp_dim)
        self.visual_pool = (
            MAPBlock(c.input_dim, c.hidden_dim, c.num_heads, c.mlp_dim)
            if c.use_visual_pool
            else None
        )
        self.proprio_proj = (
            nn.Sequential(
                nn.Linear(c.action_dim, c.hidden_dim),
                nn.GELU(),
                nn.Linear(c.hidden_dim, c.hidden_dim),
            )
            if c.use_proprio
            else None
        )
        width = c.hidden_dim * (2 if c.use_proprio else 1)
        self.proj = nn.Sequential(nn.Linear(width, c.chunk_len * c.action_dim))

    @property
    def chunk_len(self) -> int:
        return self.config.chunk_len

    def forward(
        self,
        hidden_states: torch.Tensor,
        proprio: torch.Tensor,
        *,
        image_states: torch.Tensor | None = None,
        hidden_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Predict a chunk in float32.

        Args:
            hidden_states: ``(B, N, input_dim)`` dynamics-token states.
            proprio: ``(B, 48)`` normalised state.
            image_states: ``(B, P, input_dim)`` image-position states (needed when
                ``use_visual_pool``).
            hidden_mask: ``(B, N)`` 1 for the states to pool (default: all).

        Returns:
            ``(B, C, 48)`` float32 normalised actions.

        Raises:
            ValueError: For shapes that do not fit the config.
        """
        c = self.config
        if kwargs:
            raise TypeError(f"MAPDecoder.forward got unexpected arguments {sorted(kwargs)}")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != c.input_dim:
            raise ValueError(
                f"hidden_states: expected (B, N, {c.input_dim}), got {tuple(hidden_states.shape)}"
            )
        batch = hidden_states.shape[0]
        if proprio.shape != (batch, c.action_dim):
            raise ValueError(
                f"proprio: expected ({batch}, {c.action_dim}), got {tuple(proprio.shape)}"
            )
        device_type = hidden_states.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            init = None
            if self.visual_pool is not None:
                if image_states is None:
                    raise ValueError("image_states are required: this decoder pools the image")
                if image_states.dim() != 3 or image_states.shape[0] != batch or image_states.shape[-1] != c.input_dim:  # fmt: skip
                    raise ValueError(
                        f"image_states: expected ({batch}, P, {c.input_dim}), got "
                        f"{tuple(image_states.shape)}"
                    )
                init = self.visual_pool(image_states.float())
            pooled = self.attn_pool(hidden_states.float(), init_embed=init, mask=hidden_mask)
            parts = [pooled]
            if self.proprio_proj is not None:
                parts.append(self.proprio_proj(proprio.float()))
            out = self.proj(torch.cat(parts, dim=-1))
        return out.view(batch, c.chunk_len, c.action_dim)
