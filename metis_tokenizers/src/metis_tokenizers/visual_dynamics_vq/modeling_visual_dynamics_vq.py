"""The visual-dynamics VQ tokenizer (METIS §4.2, appendix B): 4 tokens from 16 codes per frame pair.

An inverse-dynamics encoder ``I(D_vis | I_t, I_{t+k}, P_{t..t+k})`` reads the patch features of
frames ``t`` and ``t+k`` (DINOv2, see :mod:`metis_tokenizers.features`), the motion features of
the action window between them (the frozen encoder of a trained ``motion_rvq``; with
``motion_start`` each hand's start state is added to its motion tokens, because motion
tokens are relative to the start pose and the image change depends on where the hand is and
how it is turned) and ``num_queries`` learned query tokens, through blocks of a *spatial*
attention layer (patches attend within their own frame) and a *temporal* one (each patch attends to the same patch in
the other frame); motion and query tokens attend to everything and every patch can read them.
The queries' outputs are quantised by a :class:`vector_quantize_pytorch.VectorQuantize`
(``codebook_size`` codes of ``codebook_dim``). A forward-dynamics decoder ``F(I_{t+k} | I_t,
D_vis)``, a spatial transformer over the patches of frame ``t`` and the quantised codes,
predicts the patch features of frame ``t+k``. As in UniVLA (which METIS follows), no pixels are
reconstructed.

Shape legend: ``B`` frame pairs, ``N`` patches, ``C`` feature channels, ``T`` frames of the
motion window, ``M`` motion feature vectors (hands × latent steps), ``Q`` queries (4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from metis_core.contract import ACTION_DIM
from metis_core.interfaces import Tokenizer
from metis_tokenizers._common import check_actions, check_hand_mask
from metis_tokenizers.motion_rvq import MotionRVQ
from metis_tokenizers.visual_dynamics_vq.configuration_visual_dynamics_vq import (
    VisualDynamicsVQConfig,
)

__all__ = [
    "VisualDynamicsVQ",
    "VisualDynamicsVQOutput",
    "check_patch_features",
    "motion_encoder_features",
]


def motion_encoder_features(motion: MotionRVQ, actions: Any, hand_mask: Any = None) -> torch.Tensor:
    """The motion tokenizer's encoder output for windows, before quantisation.

    This is the adapter through which the visual-dynamics tokenizer reads motion features; it
    uses ``MotionRVQ.prepare`` (start-relative, normalised features per hand) and its
    ``encoder`` (PoseNet).

    Args:
        motion: A trained :class:`~metis_tokenizers.motion_rvq.modeling_motion_rvq.MotionRVQ`.
        actions: ``(B, T, 48)`` contract windows, ``T = motion.config.window_len``.
        hand_mask: ``(B, 2)`` or ``(B, T, 2)`` presence; all present if omitted.

    Returns:
        ``(B, H × L, latent_dim)``: per hand (in ``motion.config.hands`` order) its latent steps.
    """
    x = check_actions(actions, motion.config.window_len)
    present = check_hand_mask(hand_mask, x.shape[0], motion.config.window_len)
    features, _ = motion.prepare(x, present)
    batch, hands = features.shape[:2]
    latents = motion.encoder(features.flatten(0, 1), motion.hand_indices.repeat(batch))
    return latents.reshape(batch, hands * latents.shape[1], latents.shape[2])


def check_patch_features(
    features: Any, num_patches: int, feature_dim: int, *, what: str, batch: int | None = None
) -> torch.Tensor:
    """Validate ``(B, N, C)`` patch features and return them as float32.

    Raises:
        ValueError: For a wrong type, shape, batch size or non-finite values.
    """
    if not isinstance(features, torch.Tensor):
        raise ValueError(
            f"{what}: expected a ({'B' if batch is None else batch}, {num_patches}, "
            f"{feature_dim}) float tensor of patch features, got {type(features).__name__}"
        )
    expected = ("B" if batch is None else batch, num_patches, feature_dim)
    if (
        features.dim() != 3
        or tuple(features.shape[1:]) != (num_patches, feature_dim)
        or (batch is not None and features.shape[0] != batch)
    ):
        raise ValueError(
            f"{what}: expected patch features of shape {expected} (pairs, patches, channels), got "
            f"{tuple(features.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")
    if not features.is_floating_point():
        raise ValueError(f"{what}: expected floating-point features, got dtype {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{what}: contains NaN or infinity")
    return features.float()


def _layer(config: VisualDynamicsVQConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        config.hidden_dim,
        config.num_heads,
        dim_feedforward=int(config.hidden_dim * config.mlp_ratio),
        dropout=config.dropout,
        batch_first=True,
        norm_first=True,
        activation="gelu",
    )


def _attention_masks(patches: int, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (``True`` = may not attend) of the spatial and temporal encoder layers.

    Sequence order: patches of frame ``t``, patches of frame ``t+k``, then ``extra`` global
    tokens (motion features and queries).
    """
    length = 2 * patches + extra
    index = torch.arange(length)
    is_patch = index < 2 * patches
    frame = torch.where(is_patch, index // patches, -1)
    position = torch.where(is_patch, index % patches, -1)
    both_patches = is_patch[:, None] & is_patch[None, :]
    global_pair = ~both_patches  # a global token is involved: always allowed
    spatial = both_patches & (frame[:, None] == frame[None, :])
    temporal = both_patches & (position[:, None] == position[None, :])
    return ~(spatial | global_pair), ~(temporal | global_pair)


@dataclass
class VisualDynamicsVQOutput:
    """Result of a training forward pass (features normalised by the fitted statistics).

    Attributes:
        prediction: ``(B, N, C)`` predicted features of frame ``t+k``.
        target: ``(B, N, C)`` true features of frame ``t+k``.
        source: ``(B, N, C)`` features of frame ``t`` (the "no change" prediction).
        codes: ``(B, Q)`` int64.
        commit_loss: Scalar commitment loss.
    """

    prediction: torch.Tensor
    target: torch.Tensor
    source: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


class VisualDynamicsVQ(Tokenizer, nn.Module):
    """Visual-dynamics tokenizer: frame pair + motion window ↔ ``(B, 4)`` codes.

    Args:
        config: A :class:`VisualDynamicsVQConfig`.

    Example:
        >>> vd = VisualDynamicsVQ(VisualDynamicsVQConfig(feature_dim=32, num_patches=16,
        ...                                            motion=motion.config))
        >>> vd.set_motion_tokenizer(motion)          # a trained MotionRVQ, kept frozen
        >>> vd.fit_normalization(frame_features)      # (F, N, C), then train it
        >>> codes = vd.encode(windows, features_t=f_t, features_tk=f_tk)   # (B, 4) in [0, 16)
        >>> predicted = vd.decode(codes, features_t=f_t)                   # (B, N, C)
    """

    name: ClassVar[str] = "visual_dynamics_vq"
    config_class: ClassVar[type[VisualDynamicsVQConfig]] = VisualDynamicsVQConfig
    config: VisualDynamicsVQConfig

    def __init__(self, config: VisualDynamicsVQConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        width, patches = config.hidden_dim, config.num_patches
        motion_tokens = config.motion_tokens
        # -- inverse-dynamics encoder
        self.encoder_input = nn.Linear(config.feature_dim, width)
        self.encoder_position = nn.Parameter(torch.randn(patches, width) * 0.02)
        self.encoder_frame = nn.Parameter(torch.randn(2, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(config.num_queries, width) * 0.02)
        self.motion_tokenizer: MotionRVQ | None = None
        if config.motion is not None:
            # Frozen: its weights come from a trained motion_rvq (set_motion_tokenizer).
            self.motion_tokenizer = MotionRVQ(config.motion)
            self.motion_tokenizer.requires_grad_(False)
            self.motion_tokenizer.eval()
            self.motion_input = nn.Sequential(
                nn.LayerNorm(config.motion.latent_dim), nn.Linear(config.motion.latent_dim, width)
            )
            self.motion_position = nn.Parameter(torch.randn(motion_tokens, width) * 0.02)
            # Each hand's start state (24 contract values), added to that hand's motion tokens.
            self.start_input = nn.Linear(ACTION_DIM // 2, width) if config.motion_start else None
        self.register_buffer("motion_loaded", torch.zeros((), dtype=torch.bool))
        self.spatial_layers = nn.ModuleList(_layer(config) for _ in range(config.encoder_blocks))
        self.temporal_layers = nn.ModuleList(_layer(config) for _ in range(config.encoder_blocks))
        self.encoder_norm = nn.LayerNorm(width)
        spatial, temporal = _attention_masks(patches, motion_tokens + config.num_queries)
        self.register_buffer("spatial_mask", spatial, persistent=False)
        self.register_buffer("temporal_mask", temporal, persistent=False)
        # -- quantiser (METIS appendix B: V = 4 tokens from |C_v| = 16 codes, d = 128)
        self.quantizer = VectorQuantize(
            dim=width,
            codebook_size=config.codebook_size,
            codebook_dim=config.codebook_dim,
            kmeans_init=True,
            kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold,
            decay=config.ema_decay,
            commitment_weight=config.commitment_weight,
        )
        # -- forward-dynamics decoder (spatial only)
        self.decoder_input = nn.Linear(config.feature_dim, width)
        self.decoder_position = nn.Parameter(torch.randn(patches, width) * 0.02)
        self.code_position = nn.Parameter(torch.randn(config.num_queries, width) * 0.02)
        self.decoder_layers = nn.ModuleList(_layer(config) for _ in range(config.decoder_layers))
        self.decoder_norm = nn.LayerNorm(width)
        self.decoder_output = nn.Linear(width, config.feature_dim)
        if config.predict_residual:
            nn.init.zeros_(self.decoder_output.weight)
            nn.init.zeros_(self.decoder_output.bias)
        # Fitted per-channel normalisation of the patch features; saved with the weights.
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.register_buffer("normalization_fitted", torch.zeros((), dtype=torch.bool))

    # -- interface ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Codes in the codebook (16 by default)."""
        return self.config.codebook_size

    @property
    def tokens_per_window(self) -> int:
        """Tokens per frame pair (4 by default)."""
        return self.config.num_queries

    @property
    def is_trained(self) -> bool:
        """Whether the codebook has been initialised (by k-means in a training pass)."""
        return bool(self.quantizer._codebook.initted)

    def train(self, mode: bool = True) -> VisualDynamicsVQ:
        """Set training mode; the frozen motion tokenizer always stays in eval mode."""
        super().train(mode)
        if self.motion_tokenizer is not None:
            self.motion_tokenizer.eval()
        return self

    # -- setup -------------------------------------------------------------------------------

    @torch.no_grad()
    def set_motion_tokenizer(self, motion: MotionRVQ) -> VisualDynamicsVQ:
        """Copy in the weights of the trained motion tokenizer whose features the encoder reads.

        Raises:
            ValueError: If this config has no motion, or ``motion`` has another config or is
                untrained.
        """
        if self.motion_tokenizer is None or self.config.motion is None:
            raise ValueError(
                "visual_dynamics_vq: this config has motion=None; build it with "
                "motion=<the MotionRVQConfig> to use motion features"
            )
        if not isinstance(motion, MotionRVQ):
            raise ValueError(f"expected a MotionRVQ, got {type(motion).__name__}")
        if motion.config != self.config.motion:
            raise ValueError(
                "the motion tokenizer's config differs from VisualDynamicsVQConfig.motion; build "
                "the config with motion=motion_tokenizer.config"
            )
        if not (motion.is_trained and bool(motion.normalization_fitted)):
            raise ValueError(
                "the motion tokenizer is untrained; train it first (metis-tokenizers train "
                "motion_rvq) or load one with MotionRVQ.from_pretrained(path)"
            )
        self.motion_tokenizer.load_state_dict(motion.state_dict())
        self.motion_loaded.fill_(True)
        return self

    @torch.no_grad()
    def fit_normalization(self, features: Any) -> VisualDynamicsVQ:
        """Fit the per-channel mean and standard deviation of patch features.

        Args:
            features: ``(F, N, C)`` patch features of training frames.

        Returns:
            ``self``.
        """
        x = check_patch_features(
            features, self.config.num_patches, self.config.feature_dim, what="features"
        )
        values = x.reshape(-1, x.shape[-1]).double()
        self.feature_mean.copy_(values.mean(0).float())
        self.feature_std.copy_(values.std(0).clamp_min(1e-4).float())
        self.normalization_fitted.fill_(True)
        return self

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features → normalised."""
        return (features - self.feature_mean) / self.feature_std

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised features → raw."""
        return features * self.feature_std + self.feature_mean

    # -- networks ----------------------------------------------------------------------------

    def _motion_tokens(self, actions: Any, hand_mask: Any, batch: int) -> torch.Tensor | None:
        if self.motion_tokenizer is None:
            if actions is not None:
                raise ValueError(
                    "visual_dynamics_vq: this tokenizer was built without motion (motion=None); "
                    "pass actions=None"
                )
            return None
        if actions is None:
            raise ValueError(
                f"visual_dynamics_vq needs the motion window: actions of shape ({batch}, "
                f"{self.config.motion.window_len}, 48) between frames t and t+k"  # type: ignore[union-attr]
            )
        if not bool(self.motion_loaded):
            raise ValueError(
                "visual_dynamics_vq: no trained motion tokenizer is loaded; call "
                "set_motion_tokenizer(MotionRVQ.from_pretrained(path)) before training"
            )
        x = check_actions(actions, self.config.motion.window_len)  # type: ignore[union-attr]
        if x.shape[0] != batch:
            raise ValueError(
                f"actions: expected {batch} windows (one per frame pair), got {x.shape[0]}"
            )
        present = check_hand_mask(hand_mask, batch, self.config.motion.window_len)  # type: ignore[union-attr]
        with torch.no_grad():
            motion = motion_encoder_features(self.motion_tokenizer, x, present)
        tokens = self.motion_input(motion) + self.motion_position
        if self.start_input is not None:
            # Motion tokens are relative to each hand's start pose; the start pose says where
            # the hand is and how it is turned, hence which way the motion moves in the image.
            mt = self.motion_tokenizer
            starts = ((x[:, 0] - mt.start_mean) / mt.start_std)[:, mt.hand_values]  # (B, H, 24)
            starts = starts * present[:, mt.hand_indices, None].to(starts.dtype)
            steps = self.config.motion.latent_steps  # type: ignore[union-attr]
            tokens = tokens + self.start_input(starts).repeat_interleave(steps, dim=1)
        return tokens

    def _encode_latents(
        self, source: torch.Tensor, target: torch.Tensor, motion: torch.Tensor | None
    ) -> torch.Tensor:
        batch = source.shape[0]
        frames = torch.stack([source, target], 1)  # (B, 2, N, C)
        x = self.encoder_input(frames) + self.encoder_position + self.encoder_frame[:, None]
        parts = [x.flatten(1, 2)]
        if motion is not None:
            parts.append(motion)
        parts.append(self.queries.expand(batch, -1, -1))
        tokens = torch.cat(parts, 1)
        for spatial, temporal in zip(self.spatial_layers, self.temporal_layers, strict=True):
            tokens = spatial(tokens, src_mask=self.spatial_mask)
            tokens = temporal(tokens, src_mask=self.temporal_mask)
        return self.encoder_norm(tokens[:, -self.config.num_queries :])

    def _decode(self, source: torch.Tensor, quantised: torch.Tensor) -> torch.Tensor:
        patches = self.decoder_input(source) + self.decoder_position
        tokens = torch.cat([patches, quantised + self.code_position], 1)
        for layer in self.decoder_layers:
            tokens = layer(tokens)
        out = self.decoder_output(self.decoder_norm(tokens[:, : self.config.num_patches]))
        return source + out if self.config.predict_residual else out

    def _check_pair(self, features_t: Any, features_tk: Any) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        source = check_patch_features(features_t, c.num_patches, c.feature_dim, what="features_t")
        target = check_patch_features(
            features_tk, c.num_patches, c.feature_dim, what="features_tk", batch=source.shape[0]
        )
        return source, target

    def forward(
        self,
        features_t: torch.Tensor,
        features_tk: torch.Tensor,
        actions: torch.Tensor | None = None,
        hand_mask: Any = None,
    ) -> VisualDynamicsVQOutput:
        """Training pass: encode, quantise (updating the codebook in train mode), decode.

        Args:
            features_t: ``(B, N, C)`` raw patch features of frame ``t``.
            features_tk: ``(B, N, C)`` raw patch features of frame ``t+k``.
            actions: ``(B, T, 48)`` the motion window (``None`` without motion).
            hand_mask: ``(B, 2)``, ``(B, T, 2)`` or ``None``.
        """
        source, target = self._check_pair(features_t, features_tk)
        source, target = self.normalize(source), self.normalize(target)
        motion = self._motion_tokens(actions, hand_mask, source.shape[0])
        latents = self._encode_latents(source, target, motion)
        quantised, codes, commit = self.quantizer(latents)
        prediction = self._decode(source, quantised)
        return VisualDynamicsVQOutput(
            prediction=prediction,
            target=target,
            source=source,
            codes=codes.long(),
            commit_loss=commit.sum(),
        )

    # -- tokens ------------------------------------------------------------------------------

    def encode(
        self,
        actions: Any = None,
        hand_mask: Any = None,
        *,
        features_t: Any = None,
        features_tk: Any = None,
    ) -> torch.Tensor:
        """Frame pairs (and the motion between them) to codes.

        Args:
            actions: ``(B, T, 48)`` contract actions from frame ``t`` over the next
                ``frame_gap`` frames, resampled to the motion tokenizer's window
                (``None`` for a tokenizer built without motion).
            hand_mask: ``(B, 2)`` or ``(B, T, 2)`` presence; all present if omitted.
            features_t: ``(B, N, C)`` patch features of frame ``t``.
            features_tk: ``(B, N, C)`` patch features of frame ``t+k``.

        Returns:
            ``(B, num_queries)`` int64 codes in ``[0, codebook_size)``.

        Raises:
            ValueError: For missing or malformed inputs, or an untrained tokenizer.
        """
        if features_t is None or features_tk is None:
            raise ValueError(
                "visual_dynamics_vq.encode needs features_t and features_tk: the (B, "
                f"{self.config.num_patches}, {self.config.feature_dim}) patch features of frames "
                "t and t+k"
            )
        if not self.is_trained:
            raise ValueError(
                "visual_dynamics_vq: this tokenizer is untrained (its codebook is not "
                "initialised); train it (metis-tokenizers train visual_dynamics_vq) or load one "
                "with VisualDynamicsVQ.from_pretrained(path)"
            )
        source, target = self._check_pair(features_t, features_tk)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                source, target = self.normalize(source), self.normalize(target)
                motion = self._motion_tokens(actions, hand_mask, source.shape[0])
                _, codes, _ = self.quantizer(self._encode_latents(source, target, motion))
        finally:
            self.train(was_training)
        return codes.long()

    def check_codes(self, codes: Any) -> torch.Tensor:
        """Validate ``(B, num_queries)`` integer codes in range and return them as int64."""
        q, size = self.config.num_queries, self.config.codebook_size
        if not isinstance(codes, torch.Tensor):
            try:
                codes = torch.as_tensor(codes)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(
                    f"codes: expected a (B, {q}) integer tensor, got {type(codes).__name__}"
                ) from err
        if codes.is_floating_point() or codes.dtype == torch.bool or codes.is_complex():
            raise ValueError(f"codes: expected integer codes, got dtype {codes.dtype}")
        if codes.dim() != 2 or codes.shape[1] != q:
            raise ValueError(
                f"codes: expected shape (B, {q}) ({q} visual tokens per frame pair), got "
                f"{tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
            raise ValueError(
                f"codes: must be in [0, {size}), got values in [{int(codes.min())}, "
                f"{int(codes.max())}]"
            )
        return codes.long()

    def decode(self, codes: Any, start: Any = None, *, features_t: Any = None) -> torch.Tensor:
        """Codes and frame ``t`` to the predicted patch features of frame ``t+k``.

        Args:
            codes: ``(B, num_queries)`` int64.
            start: Unused (visual codes do not depend on the hand state); accepted for the
                :class:`~metis_core.interfaces.Tokenizer` interface.
            features_t: ``(B, N, C)`` raw patch features of frame ``t``.

        Returns:
            ``(B, N, C)`` float32 predicted raw features of frame ``t+k``.
        """
        codes = self.check_codes(codes)
        if features_t is None:
            raise ValueError(
                "visual_dynamics_vq.decode needs features_t: the (B, "
                f"{self.config.num_patches}, {self.config.feature_dim}) patch features of frame t"
            )
        source = check_patch_features(
            features_t,
            self.config.num_patches,
            self.config.feature_dim,
            what="features_t",
            batch=codes.shape[0],
        )
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                quantised = self.quantizer.get_output_from_indices(codes)
                prediction = self._decode(self.normalize(source), quantised)
        finally:
            self.train(was_training)
        return self.denormalize(prediction)
