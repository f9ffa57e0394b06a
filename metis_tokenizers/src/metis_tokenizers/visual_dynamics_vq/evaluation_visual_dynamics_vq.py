"""Evaluating the visual-dynamics tokenizer against the "no change" baseline.

For every frame pair the tokenizer encodes ``(t, t+k, motion)`` to codes and decodes
``(t, codes)`` to predicted patch features of frame ``t+k``; the baseline predicts that frame
``t+k`` looks like frame ``t``. Both are scored by the cosine similarity to the true features
(per patch, raw feature space, averaged over patches and pairs), also on the quarter of patches
that change most, and by the mean squared error in the tokenizer's normalised feature space.
Codebook health: distinct codes used, their fraction and the perplexity of the code distribution.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import FramePairs
from metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq import VisualDynamicsVQ
from metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq import code_statistics

__all__ = ["VisualDynamicsReport", "evaluate_visual_dynamics", "plot_visual_dynamics_report"]


@dataclass
class VisualDynamicsReport:
    """What :func:`evaluate_visual_dynamics` measured.

    Attributes:
        pairs: Frame pairs evaluated.
        cosine_predicted: Mean cosine similarity of predicted vs true features of ``t+k``.
        cosine_baseline: The same for the "no change" prediction (features of ``t``).
        cosine_margin: ``cosine_predicted - cosine_baseline``.
        cosine_gap_closed: Fraction of the baseline's shortfall from a perfect cosine of 1 that
            the prediction makes up, ``cosine_margin / (1 - cosine_baseline)``.
        cosine_predicted_changed: Predicted, on the 25 % of patches that change most.
        cosine_baseline_changed: Baseline, on the same patches.
        mse_predicted: Mean squared error in normalised feature space.
        mse_baseline: The same for the baseline.
        mse_reduction: ``1 - mse_predicted / mse_baseline``.
        codes_used: Distinct codes used over all pairs and positions.
        usage: ``codes_used / codebook_size``.
        perplexity: ``exp`` of the entropy of the code distribution.
        usage_per_position: Distinct codes used at each of the token positions.
        per_pair_cosine_predicted: Per-pair mean cosine (for plots).
        per_pair_cosine_baseline: Per-pair mean baseline cosine (for plots).
        code_counts: How often each code was used.
    """

    pairs: int
    cosine_predicted: float
    cosine_baseline: float
    cosine_margin: float
    cosine_gap_closed: float
    cosine_predicted_changed: float
    cosine_baseline_changed: float
    mse_predicted: float
    mse_baseline: float
    mse_reduction: float
    codes_used: int
    usage: float
    perplexity: float
    usage_per_position: list[int] = field(default_factory=list)
    per_pair_cosine_predicted: list[float] = field(default_factory=list, repr=False)
    per_pair_cosine_baseline: list[float] = field(default_factory=list, repr=False)
    code_counts: list[int] = field(default_factory=list)

    def to_dict(self, *, per_pair: bool = False) -> dict[str, Any]:
        """JSON-ready dict (per-pair lists only if ``per_pair``)."""
        data = asdict(self)
        if not per_pair:
            data.pop("per_pair_cosine_predicted")
            data.pop("per_pair_cosine_baseline")
        return data

    def summary(self) -> str:
        """A few aligned lines for the command line."""
        return "\n".join(
            [
                f"frame pairs              {self.pairs}",
                f"cosine, predicted t+k    {self.cosine_predicted:.4f}",
                f"cosine, 'no change'      {self.cosine_baseline:.4f}",
                f"margin                   {self.cosine_margin:+.4f} "
                f"({100 * self.cosine_gap_closed:.0f} % of the gap to 1 closed)",
                f"cosine on changed 25 %   {self.cosine_predicted_changed:.4f} vs "
                f"{self.cosine_baseline_changed:.4f} (no change)",
                f"normalised MSE           {self.mse_predicted:.4f} vs {self.mse_baseline:.4f} "
                f"(no change), {100 * self.mse_reduction:.1f} % lower",
                f"codes used               {self.codes_used} ({100 * self.usage:.0f} %), per "
                f"position {self.usage_per_position}",
                f"code perplexity          {self.perplexity:.2f}",
            ]
        )


@torch.no_grad()
def evaluate_visual_dynamics(
    tokenizer: VisualDynamicsVQ,
    pairs: FramePairs,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> VisualDynamicsReport:
    """Score a trained tokenizer on frame pairs (see the module docstring).

    Raises:
        ValueError: If the pairs do not fit the tokenizer (features, window, frame gap).
    """
    c = tokenizer.config
    if pairs.frame_gap != c.frame_gap:
        raise ValueError(
            f"the pairs were built with frame_gap={pairs.frame_gap}, the tokenizer with "
            f"{c.frame_gap}"
        )
    if len(pairs) == 0:
        raise ValueError("no frame pairs to evaluate")
    cos_pred, cos_base, sq_pred, sq_base, all_codes = [], [], [], [], []
    for begin in tqdm(range(0, len(pairs), batch_size), desc="eval", disable=not progress):
        index = torch.arange(begin, min(begin + batch_size, len(pairs)))
        features_t, features_tk, actions, hand_mask = pairs.batch(index)
        codes = tokenizer.encode(
            actions if c.motion is not None else None,
            hand_mask,
            features_t=features_t,
            features_tk=features_tk,
        )
        predicted = tokenizer.decode(codes, features_t=features_t)
        cos_pred.append(F.cosine_similarity(predicted, features_tk, dim=-1))
        cos_base.append(F.cosine_similarity(features_t, features_tk, dim=-1))
        target = tokenizer.normalize(features_tk)
        sq_pred.append(((tokenizer.normalize(predicted) - target) ** 2).mean(-1))
        sq_base.append(((tokenizer.normalize(features_t) - target) ** 2).mean(-1))
        all_codes.append(codes)
    cp, cb = torch.cat(cos_pred), torch.cat(cos_base)  # (P, N)
    mp, mb = torch.cat(sq_pred), torch.cat(sq_base)
    codes = torch.cat(all_codes)
    changed = mb >= torch.quantile(mb.flatten().double(), 0.75).float()
    stats = code_statistics(codes, c.codebook_size)
    return VisualDynamicsReport(
        pairs=len(pairs),
        cosine_predicted=float(cp.mean()),
        cosine_baseline=float(cb.mean()),
        cosine_margin=float(cp.mean() - cb.mean()),
        cosine_gap_closed=float((cp.mean() - cb.mean()) / (1.0 - cb.mean()).clamp_min(1e-12)),
        cosine_predicted_changed=float(cp[changed].mean()),
        cosine_baseline_changed=float(cb[changed].mean()),
        mse_predicted=float(mp.mean()),
        mse_baseline=float(mb.mean()),
        mse_reduction=float(1.0 - mp.mean() / mb.mean().clamp_min(1e-12)),
        codes_used=int(stats["codes_used"]),
        usage=float(stats["usage"]),
        perplexity=float(stats["perplexity"]),
        usage_per_position=[int(torch.unique(codes[:, q]).numel()) for q in range(codes.shape[1])],
        per_pair_cosine_predicted=cp.mean(1).tolist(),
        per_pair_cosine_baseline=cb.mean(1).tolist(),
        code_counts=torch.bincount(codes.flatten(), minlength=c.codebook_size).tolist(),
    )


def plot_visual_dynamics_report(
    report: VisualDynamicsReport, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """PNG: per-pair cosine (predicted vs "no change") and how often each code is used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    base, pred = report.per_pair_cosine_baseline, report.per_pair_cosine_predicted
    left.scatter(base, pred, s=8, alpha=0.6)
    low = min(min(base), min(pred))
    left.plot([low, 1.0], [low, 1.0], color="grey", lw=1, ls="--", label="equal")
    left.set_xlabel("cosine to t+k, 'no change' (frame t)")
    left.set_ylabel("cosine to t+k, predicted")
    left.set_title(f"per pair: {report.cosine_predicted:.3f} vs {report.cosine_baseline:.3f}")
    left.legend(loc="lower right")
    right.bar(range(len(report.code_counts)), report.code_counts)
    right.set_xlabel("code")
    right.set_ylabel("uses")
    right.set_title(f"{report.codes_used} codes used, perplexity {report.perplexity:.1f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, target)
    return target
