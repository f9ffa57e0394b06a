"""``curves.png``: the training and held-out curves of a run, from its ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(metrics: str | Path, output: str | Path) -> Path | None:
    """Plot losses, code accuracy, learning rate and held-out errors; ``None`` without
    matplotlib (install ``metis-core[train]``) or without records."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.set_loglevel("error")  # no font-fallback chatter in the run's output
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train, held = [], []
    for line in Path(metrics).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            (held if record.get("kind") == "eval" else train).append(record)
    if not train:
        return None
    steps = [r["step"] for r in train]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    ax = axes[0][0]
    ax.plot(steps, [r["token_loss"] for r in train], label="next-token loss")
    ax.plot(steps, [r["action_loss"] for r in train], label="action L1 (normalised)")
    if held:
        ax.plot([r["step"] for r in held], [r["token_loss"] for r in held], "o--", label="held-out next-token")  # fmt: skip
        ax.plot([r["step"] for r in held], [r["action_l1"] for r in held], "s--", label="held-out action L1")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("losses")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(steps, [r["code_accuracy"] for r in train], label="train (teacher forcing)")
    if held:
        ax.plot([r["step"] for r in held], [r["code_accuracy"] for r in held], "o--", label="held-out")  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_title("code-token accuracy")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(steps, [r["lr"] for r in train])
    ax.set_xlabel("step")
    ax.set_title("learning rate")
    ax = axes[1][1]
    if held:
        for key, label in (("fingertip_mm", "fingertips (mm)"), ("wrist_mm", "wrist position (mm)"), ("wrist_deg", "wrist rotation (deg)")):  # fmt: skip
            if key in held[0]:
                ax.plot([r["step"] for r in held], [r[key] for r in held], "o-", label=label)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no held-out evaluation\n(data.heldout_fraction = 0)", ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_title("held-out action error (inference)")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(output)
    return output
