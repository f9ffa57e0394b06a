"""Writes a tiny OakInk-Image tree (``image/anno/...``, ``image/stream_release_v2/...``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from source_fixtures import HandTruth, hand_motion

K_CAM = np.array([[605.0, 0.0, 424.0], [0.0, 605.0, 240.0], [0.0, 0.0, 1.0]], np.float32)
SEQ = "A01001_0003_0000/2021-09-26-19-59-58"


def write_oakink(root: Path, *, frames: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 12, 13)) -> HandTruth:
    """Annotated capture frames ``frames`` of camera 0 (plus camera 1 entries, not read)."""
    count = max(frames) + 1
    truth = hand_motion(count, "right", seed=21)
    anno = root / "image" / "anno"
    for folder in ("hand_j", "cam_intr", "hand_v", "general_info", "obj_transf", "split"):
        (anno / folder).mkdir(parents=True, exist_ok=True)
    entries = []
    stream = root / "image" / "stream_release_v2" / SEQ
    stream.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        for cam in (0, 1):
            entry = [SEQ, 0, frame, cam]
            entries.append(entry)
            info = "__".join(map(str, entry)).replace("/", "__")
            joints = truth.keypoints[frame] if cam == 0 else truth.keypoints[frame] + 1.0
            with (anno / "hand_j" / f"{info}.pkl").open("wb") as handle:
                pickle.dump(joints.astype(np.float32), handle)
            with (anno / "cam_intr" / f"{info}.pkl").open("wb") as handle:
                pickle.dump(K_CAM, handle)
        name = "north_east_color"
        Image.fromarray(np.full((480, 848, 3), 10 * frame, np.uint8)).save(stream / f"{name}_{frame}.png")  # fmt: skip
    (anno / "seq_all.json").write_text(json.dumps(entries))
    (root / "shape" / "metaV2").mkdir(parents=True, exist_ok=True)
    (root / "shape" / "metaV2" / "object_id.json").write_text(json.dumps({"A01001": {"name": "mug"}}))  # fmt: skip
    return truth
