"""Evaluating tokenizers: errors per part, token counts, timings, codebook health, plots.

Errors are measured on contract windows decoded from tokens against the originals, over present
hands and all frames: wrist position (mm, Euclidean), wrist rotation (degrees, geodesic),
fingertips (mm, Euclidean per fingertip in the wrist frame), and the normalised MSE of the
start-relative features (MSE per dimension divided by that dimension's variance in the data).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metis_core.contract import hand_value_mask
from metis_core.interfaces import Tokenizer
from metis_core.rotations import geodesic_angle, rot6d_to_matrix
from metis_tokenizers._common import HAND_LAYOUT_LIST, to_relative
from metis_tokenizers.motion_generator import MotionWindows

__all__ = ["EvalReport", "evaluate_tokenizer", "plot_reconstruction", "reconstruction_errors"]


@dataclass
class EvalReport:
    """What :func:`evaluate_tokenizer` measured.

    Attributes:
        tokenizer: Registry name.
        tokens_per_window: Mean tokens per window.
        tokens_min: Fewest tokens in a window.
        tokens_max: Most tokens in a window.
        fixed_length: Whether every window gets the same number of tokens.
        wrist_position_mm: Mean wrist position error.
        wrist_rotation_deg: Mean wrist rotation error.
        fingertip_mm: Mean fingertip error.
        nmse: Normalised MSE of the start-relative features.
        encode_ms: Median encode time per call, keyed by batch size.
        decode_ms: Median decode time per call, keyed by batch size.
        codebook: Codebook health per level (``motion_rvq`` only).
        windows: Windows evaluated.
    """

    tokenizer: str
    tokens_per_window: float
    tokens_min: int
    tokens_max: int
    fixed_length: bool
    wrist_position_mm: float
    wrist_rotation_deg: float
    fingertip_mm: float
    nmse: float
    encode_ms: dict[int, float] = field(default_factory=dict)
    decode_ms: dict[int, float] = field(default_factory=dict)
    codebook: list[dict[str, float]] = field(default_factory=list)
    windows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["encode_ms"] = {str(k): v for k, v in self.encode_ms.items()}
        out["decode_ms"] = {str(k): v for k, v in self.decode_ms.items()}
        return out


def reconstruction_errors(
    original: torch.Tensor, reconstructed: torch.Tensor, hand_mask: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean errors per part over present hands.

    Args:
        original: ``(B, T, 48)``.
        reconstructed: ``(B, T, 48)``.
        hand_mask: ``(B, 2)`` bool; all present if omitted.

    Returns:
        ``wrist_position_mm``, ``wrist_rotation_deg``, ``fingertip_mm`` and ``nmse``.
    """
    if original.shape != reconstructed.shape:
        raise ValueError(
            f"original {tuple(original.shape)} and reconstructed {tuple(reconstructed.shape)} differ"
        )
    batch = original.shape[0]
    mask = torch.ones(batch, 2, dtype=torch.bool) if hand_mask is None else hand_mask.bool()
    position, rotation, tips = [], [], []
    for layout in HAND_LAYOUT_LIST:
        present = mask[:, layout.index]
        a, b = original[present], reconstructed[present]
        if not len(a):
            continue
        position.append(
            (a[..., layout.wrist_position] - b[..., layout.wrist_position]).norm(dim=-1).flatten()
        )
        rotation.append(
            geodesic_angle(
                rot6d_to_matrix(a[..., layout.wrist_rot6d]),
                rot6d_to_matrix(b[..., layout.wrist_rot6d]),
            ).flatten()
        )
        diff = (a[..., layout.fingertips] - b[..., layout.fingertips]).reshape(*a.shape[:2], 5, 3)
        tips.append(diff.norm(dim=-1).flatten())
    relative_a = to_relative(original, mask)[:, 1:]
    relative_b = to_relative(reconstructed, mask)[:, 1:]
    values = hand_value_mask(mask)[:, None, :].expand_as(relative_a)
    variance = relative_a.reshape(-1, 48).var(0)
    dims = variance > 1e-12
    squared = ((relative_a - relative_b) ** 2).reshape(-1, 48)
    counts = values.reshape(-1, 48).sum(0).clamp_min(1)
    mse = (squared * values.reshape(-1, 48)).sum(0) / counts
    return {
        "wrist_position_mm": float(torch.cat(position).mean() * 1000) if position else 0.0,
        "wrist_rotation_deg": float(torch.rad2deg(torch.cat(rotation).mean())) if rotation else 0.0,
        "fingertip_mm": float(torch.cat(tips).mean() * 1000) if tips else 0.0,
        "nmse": float((mse[dims] / variance[dims]).mean()) if bool(dims.any()) else 0.0,
    }


def _time_ms(fn: Any, repeats: int) -> float:
    """Median wall-clock time of one call in milliseconds, after two warm-up calls.

    The median rather than the mean, so that a few calls slowed down by other processes on a
    shared machine do not decide the figure.
    """
    fn()
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000.0 * statistics.median(times)


def evaluate_tokenizer(
    tokenizer: Tokenizer,
    windows: MotionWindows,
    *,
    batch_size: int = 512,
    timing_batches: tuple[int, ...] = (1, 64),
    timing_repeats: int = 30,
    levels: int | None = None,
) -> EvalReport:
    """Encode and decode held-out windows and measure errors, token counts and speed.

    Args:
        tokenizer: A fitted or trained tokenizer.
        windows: Held-out windows.
        batch_size: Windows per encode/decode call for the error measurement.
        timing_batches: Batch sizes to time encode and decode at.
        timing_repeats: Calls timed per measurement (the median is reported).
        levels: ``motion_rvq`` only: decode from the first ``levels`` residual levels
            (coarse-to-fine); the token count reported is then that of those levels.

    Returns:
        :class:`EvalReport`.
    """
    actions, mask = windows.actions, windows.hand_mask
    recon, counts, all_codes = [], [], []
    for begin in range(0, actions.shape[0], batch_size):
        chunk, chunk_mask = actions[begin : begin + batch_size], mask[begin : begin + batch_size]
        codes = tokenizer.encode(chunk, chunk_mask)
        if levels is not None:
            hands, steps, _ = tokenizer.codes_shape
            codes = codes.view(len(chunk), hands, steps, -1)[..., :levels].reshape(len(chunk), -1)
        counts.extend(
            [len(row) for row in codes]
            if isinstance(codes, list)
            else [codes.shape[1]] * len(chunk)
        )
        if isinstance(codes, torch.Tensor):
            all_codes.append(codes)
        start = chunk[:, 0] * hand_value_mask(chunk_mask).float()
        extra = {} if levels is None else {"levels": levels}
        recon.append(tokenizer.decode(codes, start, **extra))
    reconstructed = torch.cat(recon)
    errors = reconstruction_errors(actions, reconstructed, mask)
    encode_ms, decode_ms = {}, {}
    for size in timing_batches:
        sample = actions[:size]
        sample_mask = mask[:size]
        codes = tokenizer.encode(sample, sample_mask)
        start = sample[:, 0]
        encode_ms[size] = _time_ms(
            lambda s=sample, m=sample_mask: tokenizer.encode(s, m), timing_repeats
        )
        decode_ms[size] = _time_ms(lambda c=codes, s=start: tokenizer.decode(c, s), timing_repeats)
    health: list[dict[str, float]] = []
    if all_codes and hasattr(tokenizer, "codes_shape") and levels is None:
        from metis_tokenizers.training import codebook_health

        codes = torch.cat(all_codes)
        shaped = codes.view(codes.shape[0], *tokenizer.codes_shape)
        health = [asdict(h) for h in codebook_health(shaped, tokenizer.vocab_size)]
    return EvalReport(
        tokenizer=tokenizer.name,
        tokens_per_window=sum(counts) / len(counts),
        tokens_min=min(counts),
        tokens_max=max(counts),
        fixed_length=tokenizer.tokens_per_window is not None,
        encode_ms=encode_ms,
        decode_ms=decode_ms,
        codebook=health,
        windows=int(actions.shape[0]),
        **errors,
    )


def plot_reconstruction(
    original: torch.Tensor,
    reconstructed: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Plot one window's wrist positions and index fingertips, original vs reconstructed.

    Args:
        original: ``(T, 48)``.
        reconstructed: ``(T, 48)``.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    frames = range(original.shape[0])
    for column, layout in enumerate(HAND_LAYOUT_LIST):
        for row, (part, unit) in enumerate(
            (
                (layout.wrist_position, "wrist position (m)"),
                (layout.fingertip("index"), "index tip (m)"),
            )
        ):
            axis = axes[row][column]
            for k, (axis_name, color) in enumerate(zip("xyz", ("C0", "C1", "C2"), strict=True)):
                axis.plot(
                    frames, original[:, part][:, k], color=color, label=f"{axis_name} original"
                )
                axis.plot(
                    frames,
                    reconstructed[:, part][:, k],
                    "--",
                    color=color,
                    label=f"{axis_name} decoded",
                )
            axis.set_title(f"{layout.side} {unit}")
            axis.set_xlabel("frame")
    axes[0][0].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
