"""The residual-VQ motion tokenizer (METIS §3.2): PoseNet encoder, ResidualVQ, TCN decoder.

Each hand's window is first made start-relative (see :mod:`metis_tokenizers._common`), so the
wrist's starting pose is the global reference and no token is spent on where the hands are.
The encoder ("PoseNet") runs multi-scale temporal convolutions and self-attention over the
trajectory of one hand, resamples it to ``latent_steps`` latent vectors and a
:class:`vector_quantize_pytorch.ResidualVQ` (one shared codebook, k-means init, dead-code
replacement) turns each into ``num_levels`` codes. The decoder, a temporal convolutional network
conditioned on the start state, reconstructs the relative trajectory, which the start state maps
back to contract actions.

Token order in ``codes (B, N)``: hand-major, then latent step, then level, i.e.
``codes.view(B, H, L, Q)``.

Modes: a tokenizer is built and loaded in eval mode; ``encode``, ``decode`` and calling the
object (which encodes, as FAST users expect) never change its state, whatever the mode. Only
:meth:`MotionRVQ.reconstruct` with ``update_codebook=True`` (what the trainer calls) initialises
or updates the codebook.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from metis_core.contract import HAND_LAYOUTS
from metis_core.interfaces import Tokenizer
from metis_tokenizers._common import (
    check_integer_codes,
    check_local_path,
    check_start,
    check_windows,
    from_relative,
    to_relative,
)
from metis_tokenizers.motion_rvq.configuration_motion_rvq import MotionRVQConfig

__all__ = ["MotionRVQ", "MotionRVQOutput"]

HAND_VALUES = 24
_IDENTITY_ROT6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class _MultiScaleBlock(nn.Module):
    """Parallel temporal convolutions of several kernel sizes, fused, with a residual path."""

    def __init__(self, width: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv1d(width, width, k, padding=k // 2, padding_mode="replicate") for k in kernels
        )
        self.fuse = nn.Linear(width * len(kernels), width)
        self.norm = nn.LayerNorm(width)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, T, C) -> (N, T, C)``."""
        channels_first = x.transpose(1, 2)
        mixed = torch.cat([self.act(conv(channels_first)) for conv in self.branches], 1)
        return self.norm(x + self.fuse(mixed.transpose(1, 2)))


class _TemporalResidualBlock(nn.Module):
    """Dilated temporal convolution block of the decoder."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)
        self.norm = nn.LayerNorm(width)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, T, C) -> (N, T, C)``."""
        h = self.conv2(self.act(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm(x + h)


class PoseNetEncoder(nn.Module):
    """Multi-scale temporal convolutions + self-attention over one hand's relative trajectory."""

    def __init__(self, config: MotionRVQConfig) -> None:
        super().__init__()
        width = config.hidden_dim
        self.input = nn.Linear(HAND_VALUES, width)
        self.position = nn.Parameter(torch.zeros(config.window_len, width))
        self.hand = nn.Embedding(2, width)
        self.blocks = nn.ModuleList(
            _MultiScaleBlock(width, config.conv_kernels) for _ in range(config.num_conv_blocks)
        )
        self.attention = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(
                    width,
                    config.attention_heads,
                    dim_feedforward=2 * width,
                    dropout=0.0,
                    batch_first=True,
                    norm_first=True,
                    activation="gelu",
                ),
                config.attention_layers,
                enable_nested_tensor=False,
            )
            if config.attention_layers
            else nn.Identity()
        )
        # A learned map over time from T frames to L latent steps.
        self.to_latent_steps = nn.Linear(config.window_len, config.latent_steps)
        self.output = nn.Linear(width, config.latent_dim)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor, hand_index: torch.Tensor) -> torch.Tensor:
        """``features (N, T, 24)``, ``hand_index (N,)`` → latents ``(N, L, latent_dim)``."""
        x = self.input(features) + self.position + self.hand(hand_index)[:, None]
        for block in self.blocks:
            x = block(x)
        x = self.attention(x)
        x = self.to_latent_steps(x.transpose(1, 2)).transpose(1, 2)
        return self.output(x)


class TemporalDecoder(nn.Module):
    """Temporal convolutional decoder from quantised latents (and the start state) to a window."""

    def __init__(self, config: MotionRVQConfig) -> None:
        super().__init__()
        width = config.hidden_dim
        self.input = nn.Linear(config.latent_dim, width)
        self.to_frames = nn.Linear(config.latent_steps, config.window_len)
        self.position = nn.Parameter(torch.zeros(config.window_len, width))
        self.hand = nn.Embedding(2, width)
        self.start = nn.Linear(HAND_VALUES, width) if config.condition_on_start else None
        self.blocks = nn.ModuleList(
            _TemporalResidualBlock(width, 2**i) for i in range(max(2, config.num_conv_blocks + 1))
        )
        self.output = nn.Linear(width, HAND_VALUES)
        nn.init.normal_(self.position, std=0.02)

    def forward(
        self, latents: torch.Tensor, hand_index: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """``latents (N, L, d)``, ``hand_index (N,)``, ``start (N, 24)`` → ``(N, T, 24)``."""
        x = self.to_frames(self.input(latents).transpose(1, 2)).transpose(1, 2)
        x = x + self.position + self.hand(hand_index)[:, None]
        if self.start is not None:
            x = x + self.start(start)[:, None]
        for block in self.blocks:
            x = block(x)
        return self.output(x)


@dataclass
class MotionRVQOutput:
    """Result of a training forward pass.

    Attributes:
        reconstruction: ``(B, H, T, 24)`` normalised relative features.
        target: ``(B, H, T, 24)`` the normalised relative features that were encoded.
        codes: ``(B, H, L, Q)`` int64.
        commit_loss: Scalar commitment loss summed over levels.
        present: ``(B, H)`` bool.
    """

    reconstruction: torch.Tensor
    target: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    present: torch.Tensor


class MotionRVQ(Tokenizer, nn.Module):
    """Residual-VQ motion tokenizer: ``(B, T, 48)`` windows ↔ ``(B, 40)`` codes.

    Args:
        config: A :class:`MotionRVQConfig`.

    Example:
        >>> tok = MotionRVQ(MotionRVQConfig())
        >>> tok.fit_normalization(windows)           # (N, 16, 48), then train it
        >>> codes = tok.encode(windows[:4])          # (4, 40) int64 in [0, 512)
        >>> recon = tok.decode(codes, start=windows[:4, 0])
    """

    name: ClassVar[str] = "motion_rvq"
    config_class: ClassVar[type[MotionRVQConfig]] = MotionRVQConfig
    config: MotionRVQConfig

    def __init__(self, config: MotionRVQConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.hand_layouts = [HAND_LAYOUTS[h] for h in config.hands]
        self.encoder = PoseNetEncoder(config)
        # METIS §3.2: residual VQ with one codebook shared by the levels, k-means initialisation
        # and dead-code replacement (vector-quantize-pytorch).
        # Note: the authors' quantiser uses cosine similarity; we default to Euclidean codes
        # (``codebook_metric``), project the 128-D latent to ``codebook_dim`` = 32 for the lookup,
        # and optionally train with quantize dropout for coarse-to-fine decoding.
        self.quantizer = ResidualVQ(
            dim=config.latent_dim,
            codebook_dim=config.codebook_dim,
            num_quantizers=config.num_levels,
            codebook_size=config.codebook_size,
            shared_codebook=True,
            kmeans_init=True,
            kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold,
            decay=config.ema_decay,
            commitment_weight=config.commitment_weight,
            use_cosine_sim=config.codebook_metric == "cosine",
            quantize_dropout=config.quantize_dropout,
        )
        # Note: the authors' decoder is only conditioned on the wrist; ours reconstructs the wrist
        # motion too (it is part of every hand's 24 coded values), conditioned on the start state.
        self.decoder = TemporalDecoder(config)
        # Fitted normalisation of the relative features and of the start state, per contract
        # value; saved with the weights.
        self.register_buffer("feature_mean", torch.zeros(48))
        self.register_buffer("feature_std", torch.ones(48))
        self.register_buffer("start_mean", torch.zeros(48))
        self.register_buffer("start_std", torch.ones(48))
        self.register_buffer("normalization_fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer(
            "hand_indices", torch.tensor([layout.index for layout in self.hand_layouts])
        )
        hand_values = torch.tensor([list(layout.indices) for layout in self.hand_layouts])
        self.register_buffer("hand_values", hand_values, persistent=False)
        # Inference-ready from the start: the trainer switches to train mode itself.
        self.eval()

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike[str], **kwargs: Any) -> MotionRVQ:
        """Load a saved tokenizer, in eval mode (ready for ``encode`` / ``decode``).

        A string that names a local path (``runs/rvq``, ``./x``) but does not exist fails here
        with "no such directory"; only a bare ``owner/name`` whose owner is not a local directory
        is looked up on the Hugging Face Hub.
        """
        check_local_path(path_or_repo)
        model = super().from_pretrained(path_or_repo, **kwargs)
        return model.eval()

    def load_state_tensors(
        self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True
    ) -> None:
        """Restore weights and buffers; the tokenizer is left in eval mode."""
        super().load_state_tensors(tensors, strict=strict)
        self.eval()

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Run the block in eval mode in ``torch.inference_mode`` (no autograd bookkeeping),
        then restore every module's mode; callers clone what they return out of it."""
        # Only modules in training mode are switched (and switched back): ``eval()`` on a
        # tokenizer that is already in eval mode would walk every submodule twice per call.
        training = [module for module in self.modules() if module.training]
        for module in training:
            module.training = False
        try:
            with torch.inference_mode():
                yield
        finally:
            for module in training:
                module.training = True

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise ValueError(
                f"motion_rvq.{what}: this tokenizer is untrained (its codebook is not "
                "initialised); train it with metis_tokenizers.training.train_motion_rvq or load "
                "one with MotionRVQ.from_pretrained(path)"
            )

    # -- interface ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the shared codebook."""
        return self.config.codebook_size

    @property
    def tokens_per_window(self) -> int:
        """Hands × latent steps × levels (40 by default)."""
        return self.config.tokens_per_window

    @property
    def codes_shape(self) -> tuple[int, int, int]:
        """``(H, L, Q)``: the view of one window's codes."""
        # Note: the authors order tokens as time chunks × fingers × levels; ours are hands ×
        # latent steps × levels, so one hand's motion is one contiguous run of tokens and a
        # one-hand config drops a hand's block.
        c = self.config
        return len(c.hands), c.latent_steps, c.num_levels

    @property
    def is_trained(self) -> bool:
        """Whether the codebook has been initialised (by k-means in a training pass)."""
        return bool(self.quantizer.layers[0]._codebook.initted)

    # -- normalisation -----------------------------------------------------------------------

    @torch.no_grad()
    def fit_normalization(self, actions: Any, hand_mask: Any = None) -> MotionRVQ:
        """Fit mean/std of the relative features and of the start state on training windows.

        Args:
            actions: ``(N, T, 48)`` windows.
            hand_mask: ``(N, 2)`` or ``(N, T, 2)``; missing hands are left out of the statistics.

        Returns:
            ``self``.
        """
        x, mask = check_windows(actions, hand_mask, self.config.window_len)
        features = to_relative(x, mask)
        for layout in self.hand_layouts:
            present = mask[:, layout.index]
            if not bool(present.any()):
                continue
            idx = list(layout.indices)
            values = features[present][:, 1:, idx].reshape(-1, len(idx)).double()
            self.feature_mean[idx] = values.mean(0).float()
            std = values.std(0)
            if self.config.normalization_mode == "part_std":
                # One scale per part (wrist position, wrist rotation, fingertips): the RMS of
                # its values' standard deviations, so that errors within a part are weighed
                # like the Euclidean errors they become, and values that carry little but
                # sensor noise (e.g. a fingertip's sideways delta) are not blown up to unit
                # variance.
                for part in (layout.wrist_position, layout.wrist_rot6d, layout.fingertips):
                    offset = [idx.index(i) for i in range(part.start, part.stop)]
                    std[offset] = std[offset].pow(2).mean().sqrt()
            self.feature_std[idx] = std.clamp_min(1e-4).float()
            starts = x[present][:, 0, idx].double()
            self.start_mean[idx] = starts.mean(0).float()
            self.start_std[idx] = starts.std(0).clamp_min(1e-3).float() if len(starts) > 1 else 1.0
        self.normalization_fitted.fill_(True)
        return self

    def prepare(
        self, actions: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised relative features and start states per tokenised hand.

        Args:
            actions: ``(B, T, 48)`` validated windows.
            present: ``(B, 2)`` bool.

        Returns:
            ``features (B, H, T, 24)`` and ``start (B, H, 24)``.
        """
        relative = to_relative(actions, present)
        normalised = (relative - self.feature_mean) / self.feature_std
        start = (actions[:, 0] - self.start_mean) / self.start_std
        features = normalised[:, :, self.hand_values].permute(0, 2, 1, 3)
        starts = start[:, self.hand_values]
        return features, starts

    # -- networks ----------------------------------------------------------------------------

    def forward(self, actions: Any, hand_mask: Any = None) -> torch.Tensor:
        """Calling the tokenizer encodes (as with FAST): ``tokenizer(actions) == encode(actions)``."""
        return self.encode(actions, hand_mask)

    def reconstruct(
        self, actions: Any, hand_mask: Any = None, *, update_codebook: bool = False
    ) -> MotionRVQOutput:
        """Differentiable pass: encode, quantise (straight-through), decode.

        Args:
            actions: ``(B, T, 48)``.
            hand_mask: ``(B, 2)``, ``(B, T, 2)`` or ``None``.
            update_codebook: Initialise (k-means) and update the codebook (EMA, dead-code
                replacement, quantize dropout) from this batch. Only the trainer sets it, and it
                needs train mode; otherwise the codebook is read, never written.

        Returns:
            :class:`MotionRVQOutput`; ``commit_loss`` is zero unless ``update_codebook``.
        """
        x, present_all = check_windows(actions, hand_mask, self.config.window_len)
        if update_codebook and not self.training:
            raise ValueError(
                "motion_rvq.reconstruct: update_codebook=True needs train mode (call .train())"
            )
        if not update_codebook:
            self._require_trained("reconstruct")
        features, starts = self.prepare(x, present_all)
        batch, hands = features.shape[:2]
        flat = features.flatten(0, 1)
        hand_index = self.hand_indices.repeat(batch)
        latents = self.encoder(flat, hand_index)
        quantizer_mode = self.quantizer.training
        self.quantizer.train(update_codebook)
        try:
            quantised, codes, commit = self.quantizer(latents)
        finally:
            self.quantizer.train(quantizer_mode)
        if not update_codebook:
            # Eval-mode quantisation passes no gradient to the encoder: add the straight-through
            # path explicitly, so a loss on the reconstruction still reaches the encoder.
            quantised = latents + (quantised - latents).detach()
        recon = self.decoder(quantised, hand_index, starts.flatten(0, 1))
        shape = (batch, hands, *recon.shape[1:])
        return MotionRVQOutput(
            reconstruction=recon.view(shape),
            target=features,
            codes=codes.view(batch, hands, *codes.shape[1:]),
            commit_loss=commit.sum() if update_codebook else recon.new_zeros(()),
            present=present_all[:, self.hand_indices],
        )

    # -- tokens ------------------------------------------------------------------------------

    def encode(self, actions: Any, hand_mask: Any = None) -> torch.Tensor:
        """Windows to codes; never changes the tokenizer (its mode, codebook or buffers).

        Args:
            actions: ``(B, T, 48)`` contract windows (``T = window_len``), any float dtype.
            hand_mask: ``(B, 2)`` or ``(B, T, 2)`` bool presence; all present if omitted.
                A missing hand still gets its codes (those of "no motion"); give the same mask
                to :meth:`decode`.

        Returns:
            ``(B, tokens_per_window)`` int64 codes in ``[0, vocab_size)``.

        Raises:
            ValueError: For wrong shapes, dtypes, non-finite values, a zero wrist rotation of a
                present hand, an invalid mask, or an untrained tokenizer.
        """
        x, present = check_windows(actions, hand_mask, self.config.window_len)
        self._require_trained("encode")
        with self._inference():
            features, _ = self.prepare(x, present)
            batch = features.shape[0]
            hand_index = self.hand_indices.repeat(batch)
            latents = self.encoder(features.flatten(0, 1), hand_index)
            _, codes, _ = self.quantizer(latents)
        return codes.reshape(batch, -1).long().clone()  # an ordinary tensor, out of inference mode

    def check_codes(self, codes: Any, levels: int | None = None) -> torch.Tensor:
        """Validate codes and return them as ``(B, H, L, Q')`` int64 (``Q' = levels or Q``).

        Accepts ``(B, tokens_per_window)`` codes, or with ``levels = k`` also
        ``(B, H × L × k)`` codes that hold only the first ``k`` levels (same order).
        """
        hands, steps, num_levels = self.codes_shape
        if levels is not None and (
            isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= num_levels
        ):
            raise ValueError(f"levels must be an integer in [1, {num_levels}], got {levels!r}")
        width = self.tokens_per_window
        if levels is not None and levels < num_levels:
            probe = codes if isinstance(codes, torch.Tensor) else None
            if probe is not None and probe.dim() == 2 and probe.shape[1] == hands * steps * levels:
                width = hands * steps * levels
        try:
            checked = check_integer_codes(codes, width, self.vocab_size)
        except ValueError as err:
            if "shape" in str(err):
                raise ValueError(
                    f"codes: expected shape (B, {self.tokens_per_window}) (hands × latent steps "
                    f"× levels = {' × '.join(map(str, self.codes_shape))}), got "
                    f"{str(err).rsplit('got ', 1)[-1]}"
                ) from None
            raise
        view = checked.view(checked.shape[0], hands, steps, -1)
        return view[..., : levels or num_levels]

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N, L, k)`` codes of the first ``k`` levels → quantised latents ``(N, L, latent_dim)``.

        The sum of the first ``k`` levels' code vectors, projected to the latent: for
        ``k = num_levels`` exactly what the quantiser gives; for fewer, the coarse-to-fine
        prefix.
        """
        codebooks = self.quantizer.codebooks  # (Q, K, codebook_dim); one shared codebook
        summed = sum(codebooks[q][codes[..., q]] for q in range(codes.shape[-1]))
        return self.quantizer.project_out(summed)

    def code_embeddings(self, space: str = "latent") -> torch.Tensor:
        """The code vectors per level, e.g. to initialise a language model's new token rows.

        Args:
            space: ``"codebook"``: the raw ``(Q, K, codebook_dim)`` codebook vectors;
                ``"latent"``: each projected into the decoder's latent space without the
                projection's bias, ``(Q, K, latent_dim)`` (the decoder input is the sum over
                levels plus that bias).

        Returns:
            A detached copy (the levels share one codebook, so the rows repeat per level).
        """
        if space not in ("latent", "codebook"):
            raise ValueError(f"space must be 'latent' or 'codebook', got {space!r}")
        self._require_trained("code_embeddings")
        with torch.no_grad():
            codebooks = self.quantizer.codebooks.clone()
            if space == "codebook" or not isinstance(self.quantizer.project_out, nn.Linear):
                return codebooks
            return codebooks @ self.quantizer.project_out.weight.T

    def decode(
        self,
        codes: Any,
        start: Any = None,
        hand_mask: Any = None,
        *,
        levels: int | None = None,
    ) -> torch.Tensor:
        """Codes back to windows; never changes the tokenizer.

        Args:
            codes: ``(B, tokens_per_window)`` integer codes (or ``(B, H × L × levels)`` with
                ``levels``).
            start: ``(B, 48)`` state at the window's first frame (at inference, the robot's
                current proprio state).
            hand_mask: ``(B, 2)`` presence, as given to :meth:`encode`: missing hands come back
                as zeros. ``None``: a hand whose 24 start values are all zero is missing, every
                other hand present (so encode and decode agree when missing hands are zeros, as
                the contract writes them).
            levels: Decode from the first ``levels`` residual levels only (coarse-to-fine; most
                accurate for tokenizers trained with ``quantize_dropout``). Default: all.

        Returns:
            ``(B, T, 48)`` float32 actions; frame 0 equals ``start`` for present hands.

        Raises:
            ValueError: For codes of the wrong shape, dtype or range, a bad ``start`` (a zero or
                degenerate wrist rotation of a present hand included) or mask, or an untrained
                tokenizer.
        """
        grid = self.check_codes(codes, levels)
        start_state, present = check_start(
            start, grid.shape[0], name=self.name, hand_mask=hand_mask
        )
        self._require_trained("decode")
        with self._inference():
            decoded = self._decode_latents(
                self.latents_from_codes(grid.flatten(0, 1)), start_state, present
            )
        return decoded.clone()  # an ordinary tensor, out of inference mode

    def decode_soft(
        self,
        probabilities: torch.Tensor,
        start: Any,
        hand_mask: Any = None,
        *,
        straight_through: bool = True,
    ) -> torch.Tensor:
        """Differentiable decoding from per-token code distributions (for policy training).

        A policy that predicts logits over the codes can train with a loss in action space:
        ``decode_soft(logits.softmax(-1), start)``. With ``straight_through`` the forward pass
        uses the most likely code (exactly :meth:`decode` of the argmax) and the gradient flows
        to the probabilities as if they had been used; otherwise the expected code vector is
        decoded.

        Args:
            probabilities: ``(B, tokens_per_window, vocab_size)``, rows summing to 1.
            start: ``(B, 48)``.
            hand_mask: As in :meth:`decode`.

        Returns:
            ``(B, T, 48)`` actions with gradients to ``probabilities`` (and the decoder).
        """
        if not isinstance(probabilities, torch.Tensor) or not probabilities.is_floating_point():
            raise ValueError("probabilities: expected a float tensor (B, N, vocab_size)")
        expected = (self.tokens_per_window, self.vocab_size)
        if probabilities.dim() != 3 or tuple(probabilities.shape[1:]) != expected:
            raise ValueError(
                f"probabilities: expected shape (B, {expected[0]}, {expected[1]}), got "
                f"{tuple(probabilities.shape)}"
            )
        if probabilities.shape[0] == 0:
            raise ValueError("probabilities: the batch is empty")
        if not bool(torch.isfinite(probabilities).all()):
            raise ValueError("probabilities: contains NaN or infinity")
        start_state, present = check_start(
            start, probabilities.shape[0], name=self.name, hand_mask=hand_mask
        )
        self._require_trained("decode_soft")
        _, steps, num_levels = self.codes_shape
        weights = probabilities.float()
        if straight_through:
            hard = torch.nn.functional.one_hot(weights.argmax(-1), self.vocab_size).to(weights)
            weights = hard + weights - weights.detach()
        weights = weights.view(-1, steps, num_levels, self.vocab_size)
        codebooks = self.quantizer.codebooks
        summed = sum(weights[:, :, q] @ codebooks[q] for q in range(num_levels))
        latents = self.quantizer.project_out(summed)
        return self._decode_latents(latents, start_state, present)

    def _decode_latents(
        self, latents: torch.Tensor, start_state: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        batch = start_state.shape[0]
        starts = ((start_state - self.start_mean) / self.start_std)[:, self.hand_values]
        hand_index = self.hand_indices.repeat(batch)
        recon = self.decoder(latents, hand_index, starts.flatten(0, 1))
        features = self.features_from_network(recon.view(batch, -1, *recon.shape[1:]))
        return from_relative(features, start_state, present)

    def features_from_network(self, recon: torch.Tensor) -> torch.Tensor:
        """``(B, H, T, 24)`` normalised network output → ``(B, T, 48)`` relative features.

        Frame 0 is set to exactly "no motion" (the start state itself).
        """
        batch, _, frames, _ = recon.shape
        features = recon.new_zeros(batch, frames, 48)
        features[:, :, self.hand_values] = recon.permute(0, 2, 1, 3)
        features = features * self.feature_std + self.feature_mean
        features[:, 0] = 0.0
        identity = features.new_tensor(_IDENTITY_ROT6D)
        for layout in self.hand_layouts:
            features[:, 0, layout.wrist_rot6d] = identity
        for side, layout in HAND_LAYOUTS.items():
            if side not in self.config.hands:
                # A hand without tokens holds its start pose.
                features[:, :, layout.wrist_rot6d] = identity
        return features
