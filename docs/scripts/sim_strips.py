"""Draw the rollout strips of the simulator docs: ``python docs/scripts/sim_strips.py [OUT_DIR]``.

One PNG per task (six ego frames of the scripted expert, seed 0; the paper's tasks and the
pre-training tasks), one of the out-of-distribution variants (the first frame of each), one of
the SharpaWave scene and two of kinematic human-hand demonstrations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import metis_sim
from metis_core.registry import ENVS
from metis_sim.cli import rollout_strip


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task in metis_sim.ALL_TASKS:
        Image.fromarray(rollout_strip(task, seed=0, frames=6)).save(out / f"{task}.png")
        print(f"wrote {out / f'{task}.png'}")
    frames = []
    for variant in ("default", "background", "lighting", "object", "clutter"):
        env = ENVS.create("pick_place", variant=variant)
        observation, _ = env.reset(seed=0)
        if variant == "lighting":  # a few steps into the flicker
            for _ in range(8):
                observation = env.step(observation["state"])[0]
        frames.append(observation["image"])
        env.close()
    Image.fromarray(np.concatenate(frames, axis=1)).save(out / "variants.png")
    Image.fromarray(rollout_strip("open_drawer", seed=0, frames=6, embodiment="sharpawave")).save(out / "sharpawave_open_drawer.png")  # fmt: skip
    print(f"wrote {out / 'variants.png'} and {out / 'sharpawave_open_drawer.png'}")
    for task in ("pick_place", "bimanual_drawer"):
        Image.fromarray(rollout_strip(task, seed=0, frames=6, embodiment="human_mano")).save(out / f"human_{task}.png")  # fmt: skip
        print(f"wrote {out / f'human_{task}.png'}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "sim" / "strips"
    )
