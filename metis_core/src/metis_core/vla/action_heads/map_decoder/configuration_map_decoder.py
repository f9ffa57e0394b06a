"""Configuration of the MAP action decoder."""

from __future__ import annotations

from dataclasses import dataclass

from metis_core.config import ComponentConfig
from metis_core.contract import ACTION_DIM

__all__ = ["MAPDecoderConfig"]


@dataclass(frozen=True, kw_only=True)
class MAPDecoderConfig(ComponentConfig):
    """Sizes of the multi-head attention pooling (MAP) action decoder (METIS §3.3, UniVLA).

    Defaults give the authors' decoder at chunk 30: 14,360,992 parameters over a 4096-wide LM.

    Args:
        input_dim: Width of the backbone hidden states it reads (4096 for LLaMA-2 7B).
        action_dim: Values per action (48: the hand contract).
        chunk_len: ``C``, actions per chunk (30 = 1 s at 30 Hz; the authors' release uses 32).
        hidden_dim: Width of the pooling blocks.
        num_heads: Attention heads of each pooling block.
        mlp_dim: Width of the SwiGLU MLP inside each pooling block.
        use_proprio: Feed the proprio state through a 2-layer MLP into the head.
        use_visual_pool: Pool the image-position states and seed the dynamics query with them.
    """

    input_dim: int = 4096
    action_dim: int = ACTION_DIM
    chunk_len: int = 30
    hidden_dim: int = 512
    num_heads: int = 8
    mlp_dim: int = 2048
    use_proprio: bool = True
    use_visual_pool: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, low, high in (
            ("input_dim", 1, 65536),
            ("action_dim", 1, 4096),
            ("chunk_len", 1, 1024),
            ("hidden_dim", 1, 16384),
            ("num_heads", 1, 256),
            ("mlp_dim", 1, 65536),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {self.hidden_dim} must be divisible by num_heads {self.num_heads}"
            )
