"""Draw the two frames of the hand action contract (docs figure ``_static/frames.png``).

Left: the ego camera frame (OpenCV: x right, y down, z forward) with a right hand in front of
the camera and the wrist frame that ``metis_core.wrist_frame_from_keypoints`` builds from its
wrist, index-MCP, middle-MCP and little-MCP keypoints. Right: the same hand in its wrist frame,
where the contract stores the five fingertips.

Usage: ``python docs/scripts/draw_frames.py docs/_static/frames.png``
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from metis_core import to_wrist_frame, wrist_frame_from_keypoints
from metis_core.rotations import axis_angle_to_matrix

# A right hand in its own wrist frame (metres): wrist, MCPs, and fingertips
# (thumb, index, middle, ring, little); the same numbers as examples/quickstart.py.
MCPS = {
    "index": (0.0, 0.024, 0.088),
    "middle": (0.0, 0.0, 0.092),
    "ring": (0.0, -0.018, 0.086),
    "little": (0.0, -0.036, 0.076),
}
TIPS = {
    "thumb": (0.035, 0.070, 0.080),
    "index": (0.030, 0.030, 0.160),
    "middle": (0.035, 0.002, 0.170),
    "ring": (0.032, -0.020, 0.160),
    "little": (0.028, -0.040, 0.140),
}
AXIS_COLOURS = ("tab:red", "tab:green", "tab:blue")


def hand_in_camera() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Place the hand 45 cm in front of the camera, turned and tilted."""
    rotation = axis_angle_to_matrix(torch.tensor([0.9, -0.5, 0.4], dtype=torch.float64))
    position = torch.tensor([0.08, 0.12, 0.45], dtype=torch.float64)

    def place(points: dict[str, tuple[float, float, float]]) -> dict[str, torch.Tensor]:
        return {
            k: torch.tensor(v, dtype=torch.float64) @ rotation.T + position
            for k, v in points.items()
        }

    return place(MCPS), place(TIPS) | {"wrist": position}


def draw_axes(ax, origin, rotation, length: float, labels: tuple[str, str, str]) -> None:
    for column, (colour, label) in enumerate(zip(AXIS_COLOURS, labels, strict=True)):
        tip = origin + length * rotation[:, column]
        ax.plot(*zip(origin.tolist(), tip.tolist(), strict=True), color=colour, linewidth=2.5)
        ax.text(*tip.tolist(), label, color=colour, fontsize=9)


def draw_hand(ax, wrist, mcps, tips) -> None:
    for finger, tip in tips.items():
        base = mcps.get(finger, wrist)
        chain = [wrist, base, tip] if finger != "thumb" else [wrist, tip]
        xs, ys, zs = zip(*[p.tolist() for p in chain], strict=True)
        ax.plot(xs, ys, zs, color="0.35", linewidth=1.2)
        ax.scatter(*tip.tolist(), color="tab:orange", s=18)
    for mcp in mcps.values():
        ax.scatter(*mcp.tolist(), color="0.2", s=10)
    ax.scatter(*wrist.tolist(), color="black", s=30)


def main(out: Path) -> None:
    mcps, tips = hand_in_camera()
    wrist = tips.pop("wrist")
    rotation, origin = wrist_frame_from_keypoints(
        wrist, mcps["index"], mcps["middle"], mcps["little"]
    )

    fig = plt.figure(figsize=(11, 5.2))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    draw_axes(ax, torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), 0.12,
              ("x (right)", "y (down)", "z (forward)"))  # fmt: skip
    draw_hand(ax, wrist, mcps, tips)
    draw_axes(ax, origin, rotation, 0.06, ("x", "y", "z"))
    ax.set_title("ego camera frame (OpenCV) — wrist pose stored here")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.view_init(elev=15, azim=-120, vertical_axis="y")
    ax.invert_yaxis()  # y points down on the page, as in the image

    ax2 = fig.add_subplot(1, 2, 2, projection="3d")

    def local(points: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: to_wrist_frame(v[None], origin, rotation)[0] for k, v in points.items()}

    local_tips, local_mcps = local(tips), local(mcps)
    zero = torch.zeros(3, dtype=torch.float64)
    draw_axes(ax2, zero, torch.eye(3, dtype=torch.float64), 0.06,
              ("x = y × z", "y (little→index MCP)", "z (wrist→middle MCP)"))  # fmt: skip
    draw_hand(ax2, zero, local_mcps, local_tips)
    ax2.set_title("wrist frame — fingertips stored here")
    ax2.set_xlabel("x [m]")
    ax2.set_ylabel("y [m]")
    ax2.set_zlabel("z [m]")
    ax2.view_init(elev=20, azim=-35)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python docs/scripts/draw_frames.py OUT.png")
    main(Path(sys.argv[1]))
