"""Held-out evaluation of a policy, in the units of the hand contract.

Two passes over held-out samples:

* **teacher forcing** (the training forward): next-token loss, normalised action L1,
  code-token accuracy (argmax of the code targets given the true prefix) and the errors below
  for the chunk the head predicts from the true codes (``teacher_forced_*``);
* **inference** (``predict_action``, greedy decoding, the model deciding whether to reason):
  the predicted chunk against the recorded one, over valid rows and present hands —
  ``wrist_mm`` (mean absolute error of the wrist positions, millimetres), ``wrist_deg``
  (geodesic angle between predicted and true wrist rotations, degrees), ``fingertip_mm`` (mean
  absolute error of the fingertips in the wrist frame, millimetres), their ``*_p95`` tails;
  ``reason_accuracy`` (reasoned exactly where a subtask starts) and ``subtask_accuracy``
  (exact subtask text where one starts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metis_core.rotations import geodesic_angle, rot6d_to_matrix
from metis_core.vla.data import TrainingSample

__all__ = ["chunk_errors", "evaluate_policy"]

_WRIST_POS = (slice(0, 3), slice(9, 12))
_WRIST_ROT = (slice(3, 9), slice(12, 18))
_TIPS = (slice(18, 33), slice(33, 48))


def chunk_errors(predicted: np.ndarray, target: np.ndarray, valid: np.ndarray, hand_mask: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-value errors of chunks in contract units.

    Args:
        predicted, target: ``(B, C, 48)`` contract values (metres, 6D).
        valid: ``(B, C)`` rows inside the episode.
        hand_mask: ``(B, C, 2)`` hand presence.

    Returns:
        ``wrist_mm`` (per coordinate), ``wrist_deg`` (per wrist and row), ``fingertip_mm`` (per
        coordinate) as flat arrays over the valid, present entries.
    """
    out: dict[str, list[np.ndarray]] = {"wrist_mm": [], "wrist_deg": [], "fingertip_mm": []}
    for hand in range(2):
        keep = valid & hand_mask[..., hand]
        if not keep.any():
            continue
        p, t = predicted[keep], target[keep]
        out["wrist_mm"].append(np.abs(p[:, _WRIST_POS[hand]] - t[:, _WRIST_POS[hand]]).ravel() * 1000.0)  # fmt: skip
        rp = rot6d_to_matrix(torch.as_tensor(p[:, _WRIST_ROT[hand]], dtype=torch.float64))
        rt = rot6d_to_matrix(torch.as_tensor(t[:, _WRIST_ROT[hand]], dtype=torch.float64))
        out["wrist_deg"].append(np.degrees(geodesic_angle(rp, rt).numpy()).ravel())
        out["fingertip_mm"].append(np.abs(p[:, _TIPS[hand]] - t[:, _TIPS[hand]]).ravel() * 1000.0)  # fmt: skip
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


@torch.no_grad()
def evaluate_policy(policy: Any, samples: Sequence[TrainingSample], *, batch_size: int = 8) -> dict[str, float]:  # fmt: skip
    """Metrics of ``policy`` on held-out ``samples`` (see the module docstring)."""
    if not samples:
        return {}
    was_training = policy.training
    policy.eval()
    sums = defaultdict(float)
    errors: dict[str, list[np.ndarray]] = defaultdict(list)
    for start in range(0, len(samples), batch_size):
        chunk = list(samples[start : start + batch_size])
        out = policy(policy.collate(chunk).to(next(policy.action_head.parameters()).device))
        # the chunk the head predicts from the true codes, in contract units
        forced = np.stack([
            policy.normalization.unnormalize(out.actions[i].detach().double().cpu(), "action", key=s.dataset_key, hand_mask=torch.from_numpy(s.hand_mask)).numpy()
            for i, s in enumerate(chunk)
        ])  # fmt: skip
        for name, values in chunk_errors(forced, np.stack([s.actions for s in chunk]).astype(np.float64), np.stack([s.action_valid for s in chunk]), np.stack([s.hand_mask for s in chunk])).items():  # fmt: skip
            errors[f"teacher_forced_{name}"].append(values)
        sums["token"] += float(out.token_loss) * out.token_count
        sums["tokens"] += out.token_count
        sums["action"] += float(out.action_loss) * out.action_count
        sums["actions"] += out.action_count
        sums["code_correct"] += out.code_correct
        sums["codes"] += out.code_count
    reason_right = subtask_right = subtask_total = 0
    by_key: dict[Any, list[TrainingSample]] = defaultdict(list)
    for sample in samples:
        by_key[sample.dataset_key].append(sample)
    for key, group in by_key.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            prediction = policy.predict_action(
                np.stack([s.image for s in chunk]),
                [s.instruction for s in chunk],
                np.stack([s.state for s in chunk]),
                subtask=[s.previous_subtask for s in chunk],
                hand_mask=np.stack([s.hand_mask[0] for s in chunk]),
                unnorm_key=key,
                temperature=0.0,
            )
            for name, values in chunk_errors(
                np.asarray(prediction.actions, dtype=np.float64),
                np.stack([s.actions for s in chunk]).astype(np.float64),
                np.stack([s.action_valid for s in chunk]),
                np.stack([s.hand_mask for s in chunk]),
            ).items():
                errors[name].append(values)
            for sample, reasoned, text in zip(chunk, prediction.reasoned, prediction.subtask, strict=True):  # fmt: skip
                reason_right += int(bool(reasoned) == (sample.subtask is not None))
                if sample.subtask is not None:
                    subtask_total += 1
                    subtask_right += int(reasoned and text is not None and text.strip() == sample.subtask.strip())  # fmt: skip
    metrics = {
        "token_loss": sums["token"] / max(sums["tokens"], 1.0),
        "action_l1": sums["action"] / max(sums["actions"], 1.0),
        "code_accuracy": sums["code_correct"] / max(sums["codes"], 1.0),
    }
    for name, parts in errors.items():
        values = np.concatenate(parts) if parts else np.zeros(0)
        if values.size:
            metrics[name] = float(values.mean())
            metrics[f"{name}_p95"] = float(np.percentile(values, 95))
    metrics["reason_accuracy"] = reason_right / len(samples)
    if subtask_total:
        metrics["subtask_accuracy"] = subtask_right / subtask_total
    metrics["samples"] = float(len(samples))
    if was_training:
        policy.train()
    return metrics
