"""Dexterous hands for METIS: Inspire, SharpaWave and human (MANO-21, Manus-25) hands.

Every hand is an :class:`metis_core.interfaces.Embodiment` registered through the
``metis.embodiments`` entry points, exactly as a third-party plugin would be; build one with
``metis_core.registry.EMBODIMENTS.create("inspire", side="left")``.

* :class:`~metis_embodiments.urdf_hand.URDFHand` — the base for robot hands described by a URDF
  (couplings from ``<mimic>`` tags, calibration to the contract wrist frame, left/right, batched
  FK through pytorch-kinematics, batched Levenberg–Marquardt IK, dex-retargeting reference IK).
* :class:`~metis_embodiments.human.KeypointHand` — the base for human keypoint hands.
* :func:`~metis_embodiments.retarget.retarget` — human keypoints onto any robot hand.

Importing this package is light: the hands are imported when the registry loads them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
