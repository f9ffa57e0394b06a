"""dex-retargeting's position optimiser as a per-frame reference IK backend.

dex-retargeting (Qin et al., AnyTeleop) solves one frame at a time with NLopt's SLSQP on a Huber
loss over fingertip positions, using pinocchio for kinematics and handling URDF mimic joints
itself. We feed it the same URDF the torch solver uses with its ``<visual>``/``<collision>``
elements removed (a copy in a temporary directory: kinematics needs no meshes, and pinocchio
would otherwise print "Unable to resolve filename" for every mesh it cannot find), with targets
moved from the contract wrist frame to the URDF base link frame. Fingertips the hand does not
have are left out of the problem.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from metis_embodiments.kinematics import HandKinematics, strip_geometry

__all__ = ["DexRetargetingIK"]


class DexRetargetingIK:
    """Sequential fingertip IK through ``dex_retargeting``'s ``PositionOptimizer``.

    Args:
        kinematics: The hand's kinematics (URDF, fingertip links, calibration, side).
        ftol_abs: NLopt absolute objective tolerance. dex-retargeting's default is 1e-5; smaller
            values trade time for accuracy (the benchmark matches the torch solver's error).
        norm_delta: Weight of dex-retargeting's pull towards the previous frame's joints
            (its default 4e-3); 0 solves the pure position problem.
        huber_delta: Huber loss threshold in metres (dex-retargeting's default 0.02).

    Raises:
        ImportError: If dex-retargeting is not installed, naming the package to install.
    """

    def __init__(
        self,
        kinematics: HandKinematics,
        *,
        ftol_abs: float = 1e-10,
        norm_delta: float = 0.0,
        huber_delta: float = 0.02,
    ) -> None:
        try:
            from dex_retargeting.retargeting_config import RetargetingConfig
        except ImportError as error:  # pragma: no cover - dependency of metis-embodiments
            raise ImportError(
                "the 'dex_retargeting' IK backend needs dex-retargeting: "
                "pip install 'dex-retargeting>=0.4' six"
            ) from error
        self.kinematics = kinematics
        self._tmp = tempfile.TemporaryDirectory(prefix="metis_dex_")
        urdf = Path(self._tmp.name) / Path(kinematics.urdf_path).name
        urdf.write_text(strip_geometry(Path(kinematics.urdf_path).read_text()))
        self._present = [i for i, link in enumerate(kinematics.fingertip_links) if link]
        config = RetargetingConfig.from_dict(
            {
                "type": "position",
                "urdf_path": str(urdf),
                "target_joint_names": list(kinematics.actuated_joint_names),
                "target_link_names": [kinematics.fingertip_links[i] for i in self._present],
                "target_link_human_indices": np.arange(len(self._present)),
                "add_dummy_free_joint": False,
                "low_pass_alpha": 1.0,  # no temporal filtering: pure per-frame IK
                "normal_delta": norm_delta,
                "huber_delta": huber_delta,
            }
        )
        self.retargeting = config.build()
        self.retargeting.optimizer.opt.set_ftol_abs(ftol_abs)
        optimizer_joints = list(self.retargeting.optimizer.target_joint_names)
        # Map between dex-retargeting's optimised joint order and ours.
        self._to_ours = [optimizer_joints.index(n) for n in kinematics.actuated_joint_names]
        self._to_theirs = [kinematics.actuated_joint_names.index(n) for n in optimizer_joints]

    def _to_base(self, fingertips: torch.Tensor) -> np.ndarray:
        """``(F, 3)`` wrist-frame targets → the URDF base frame dex-retargeting works in."""
        k = self.kinematics
        points = fingertips.detach().to(torch.float64).cpu()
        if k.mirror:
            points = points * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        base = points @ k.calibration_rotation.T + k.calibration_origin
        return base.numpy()[self._present]

    def solve(
        self, fingertips: torch.Tensor, initial_joints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Solve frames one after another, each warm-started from the previous solution.

        Args:
            fingertips: ``(B, F, 3)`` targets in the contract wrist frame, in time order.
            initial_joints: ``(A,)`` or ``(B, A)``; the first row warm-starts the first frame
                (default: the middle of the ranges, as dex-retargeting does).

        Returns:
            ``(B, A)`` joints in ``fingertips.dtype``.
        """
        limits = self.kinematics.joint_limits.numpy()
        if initial_joints is not None:
            start = initial_joints.reshape(-1, initial_joints.shape[-1])[0].detach().cpu().double()
            last = start.numpy()[self._to_theirs]
        else:
            last = limits.mean(1)[self._to_theirs]
        self.retargeting.last_qpos = last.astype(np.float32)
        out = np.zeros((fingertips.shape[0], len(self._to_ours)))
        for frame in range(fingertips.shape[0]):
            self.retargeting.retarget(self._to_base(fingertips[frame]))
            out[frame] = np.asarray(self.retargeting.last_qpos, dtype=np.float64)[self._to_ours]
        out = np.clip(out, limits[:, 0], limits[:, 1])
        return torch.as_tensor(out, dtype=fingertips.dtype)
