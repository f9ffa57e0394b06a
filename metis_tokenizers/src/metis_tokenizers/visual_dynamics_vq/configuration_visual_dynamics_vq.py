"""Configuration of the visual-dynamics VQ tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field

from metis_core.config import ComponentConfig
from metis_tokenizers.motion_rvq.configuration_motion_rvq import MotionRVQConfig

__all__ = ["VisualDynamicsVQConfig"]


@dataclass(frozen=True, kw_only=True)
class VisualDynamicsVQConfig(ComponentConfig):
    """Sizes of the visual-dynamics tokenizer (METIS §4.2 and appendix B: 4 tokens, 16 codes, d = 128).

    Defaults fit DINOv2-L at 224×224 (16 × 16 = 256 patches of 1024 channels).

    Args:
        feature_dim: Channels of the patch features (``C``; 1024 for DINOv2-L).
        num_patches: Patches per frame (``N``).
        frame_gap: ``k``: frames between the two images, at the dataset's rate. The motion
            window spans the same ``k`` actions, resampled to the motion tokenizer's window.
            Default 30: one action chunk (1 s at 30 Hz).
        hidden_dim: Width of the encoder and decoder transformers.
        num_heads: Attention heads.
        encoder_blocks: Spatial–temporal blocks of the inverse-dynamics encoder (each is one
            spatial and one temporal attention layer).
        decoder_layers: Spatial attention layers of the forward-dynamics decoder.
        mlp_ratio: Feed-forward width as a multiple of ``hidden_dim``.
        dropout: Dropout inside the transformers.
        num_queries: Learned query tokens, i.e. visual tokens per frame pair (the paper's V = 4).
        codebook_size: Codes in the VQ codebook (the paper's ``|C_v| = 16``).
        codebook_dim: Dimension of the codes (the paper's d = 128).
        kmeans_iters: k-means iterations for the codebook initialisation.
        dead_code_threshold: A code whose EMA usage falls below this is replaced by a batch vector.
        ema_decay: Decay of the codebook's exponential moving averages.
        commitment_weight: Weight of the commitment loss.
        predict_residual: The decoder predicts the change from frame ``t`` (its output head
            starts at zero, i.e. at the "no change" prediction).
        motion: Config of the motion tokenizer whose encoder supplies the motion features
            (``P_{t..t+k}`` in the paper); its weights are loaded from a trained ``motion_rvq``
            and kept frozen. ``None`` leaves motion out (an ablation).
        motion_start: Also give the encoder each hand's start state (the normalised contract
            values at frame ``t``, as the motion tokenizer's decoder receives them). Motion
            tokens code the wrist *relative to its starting pose*, so without the start pose the
            encoder cannot tell which way a motion moves in the camera image.
    """

    feature_dim: int = 1024
    num_patches: int = 256
    frame_gap: int = 30
    hidden_dim: int = 256
    num_heads: int = 8
    encoder_blocks: int = 2
    decoder_layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    num_queries: int = 4
    codebook_size: int = 16
    codebook_dim: int = 128
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0
    ema_decay: float = 0.95
    commitment_weight: float = 0.25
    predict_residual: bool = True
    motion: MotionRVQConfig | None = field(default_factory=MotionRVQConfig)
    motion_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "feature_dim",
            "num_patches",
            "frame_gap",
            "hidden_dim",
            "num_heads",
            "encoder_blocks",
            "decoder_layers",
            "num_queries",
            "codebook_dim",
            "kmeans_iters",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment_weight < 0:
            raise ValueError(f"commitment_weight must be >= 0, got {self.commitment_weight}")

    @property
    def motion_tokens(self) -> int:
        """Motion feature vectors per window (hands × latent steps; 0 without motion)."""
        if self.motion is None:
            return 0
        return len(self.motion.hands) * self.motion.latent_steps
