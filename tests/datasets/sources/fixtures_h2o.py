"""Writes a tiny H2O download (``subjectN/<scene>/<k>/cam4/...``) with known ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from source_fixtures import HandTruth, hand_motion

INTRINSICS = (636.6, 636.6, 635.3, 366.8, 1280, 720)


def write_h2o(root: Path, *, frames: int = 12, sequences: tuple[str, ...] = ("subject1/h1/0", "subject1/h1/1"), images: bool = True) -> dict[str, dict[str, HandTruth]]:  # fmt: skip
    """Write sequences; the left hand is unannotated (flag 0, zeros) at frames 3 and 4.

    Frames carry action ids 0 (background) for 0-1, 5 "grab milk" for 2-6, 23 "pour milk" for 7-.
    """
    truths = {}
    for number, sequence in enumerate(sequences):
        cam = root / sequence / "cam4"
        left = hand_motion(frames, "left", seed=2 * number, absent=(3, 4))
        right = hand_motion(frames, "right", seed=2 * number + 1)
        for folder in ("hand_pose", "cam_pose", "action_label", "verb_label", "rgb"):
            (cam / folder).mkdir(parents=True, exist_ok=True)
        (cam / "cam_intrinsics.txt").write_text(" ".join(map(str, INTRINSICS)) + "\n")
        for t in range(frames):
            values = [float(left.present[t]), *(left.keypoints[t].ravel() if left.present[t] else np.zeros(63)), 1.0, *right.keypoints[t].ravel()]  # fmt: skip
            (cam / "hand_pose" / f"{t:06d}.txt").write_text(" ".join(f"{v:.9f}" for v in values))
            (cam / "cam_pose" / f"{t:06d}.txt").write_text(" ".join(map(str, np.eye(4).ravel())))
            action = 0 if t < 2 else (5 if t < 7 else 23)
            (cam / "action_label" / f"{t:06d}.txt").write_text(f"{action}\n")
            (cam / "verb_label" / f"{t:06d}.txt").write_text(
                f"{0 if t < 2 else (1 if t < 7 else 5)}\n"
            )
            if images:
                pixel = np.full((720, 1280, 3), (10 * t) % 256, dtype=np.uint8)
                Image.fromarray(pixel).save(cam / "rgb" / f"{t:06d}.png")
        truths[sequence] = {"left": left, "right": right}
    return truths
