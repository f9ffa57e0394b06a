"""ARCTIC (Fan et al., CVPR 2023): bimanual articulated-object manipulation, egocentric view 0.

Two ways to read the download ``arctic_data/data/`` (see ``docs/sources/arctic.md``):

* ``annotations="splits"`` (default): ``splits/<split>.npy`` from ARCTIC's preprocessing, a dict
  ``{"data_dict": {"sXX/<seq>": {"cam_coord": {"joints.right": (T, 10, 21, 3), ...}, "params":
  {"K_ego": (T, 3, 3), ...}}}}``; view 0 of ``cam_coord`` is the egocentric camera. No MANO model
  is needed (the joints are precomputed).
* ``annotations="raw_seqs"``: ``raw_seqs/sXX/<seq>.mano.npy`` (MANO pose/shape/translation in the
  world frame) with ``<seq>.egocam.dist.npy`` (``R_k_cam_np``, ``T_k_cam_np``: world → ego). The
  21 joints come from the MANO layer of the ``smplx`` package with the user's own MANO model
  files (``mano_model_dir``; they cannot be shipped or downloaded by METIS).

Joint order is smplx MANO + fingertips (``MANO_SMPLX_21`` in ``metis_datasets.sources._common``).
Ego frames: ``images/sXX/<seq>/0/%05d.jpg`` with ``stem = frame + meta/misc.json[sXX].ioi_offset``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metis_core._optional import require
from metis_core.episode import Episode
from metis_core.io import read_json
from metis_datasets.sources._common import (
    MANO_SMPLX_21,
    IndexedDatasetSource,
    SkipEpisode,
    SourceConfig,
    build_episode,
    hands_to_contract,
    load_ego_images,
    load_pickled_npy,
    require_keys,
    require_path,
)

__all__ = ["ARCTIC_OBJECTS", "ArcticConfig", "ArcticSource", "instruction_for"]

#: ARCTIC object ids → words for the instruction.
ARCTIC_OBJECTS = {
    "box": "box",
    "capsulemachine": "capsule machine",
    "espressomachine": "espresso machine",
    "ketchup": "ketchup bottle",
    "laptop": "laptop",
    "microwave": "microwave",
    "mixer": "mixer",
    "notebook": "notebook",
    "phone": "phone",
    "scissors": "scissors",
    "waffleiron": "waffle iron",
}
_SEQ = re.compile(r"^(?P<object>[a-z]+)_(?P<intent>grab|use)_\d+$")


def instruction_for(sequence: str) -> str:
    """``"box_use_01"`` → ``"use the box"``; ``grab`` sequences → ``"grab the <object>"``."""
    match = _SEQ.match(sequence)
    if match is None:
        return ""
    words = ARCTIC_OBJECTS.get(match["object"], match["object"])
    verb = "use" if match["intent"] == "use" else "grab"
    return f"{verb} the {words}"


@dataclass(frozen=True, kw_only=True)
class ArcticConfig(SourceConfig):
    """Config of the ARCTIC adapter.

    Args:
        annotations: ``"splits"`` (precomputed joints, no MANO model) or ``"raw_seqs"`` (MANO
            parameters; needs ``mano_model_dir`` and ``pip install smplx``).
        splits: Comma-separated split files read in ``"splits"`` mode, in order; a sequence in
            several of them is taken from the first. ``p2`` is ARCTIC's egocentric protocol.
        mano_model_dir: Folder with ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` (from the MANO
            website, under its licence) for ``"raw_seqs"`` mode.
        source_fps: Capture rate of the annotations (30 Hz; SOURCES.md confidence M).
    """

    annotations: str = "splits"
    splits: str = "p2_train,p2_val"
    mano_model_dir: str = ""
    source_fps: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.annotations not in ("splits", "raw_seqs"):
            raise ValueError(f"annotations must be 'splits' or 'raw_seqs', got {self.annotations!r}")  # fmt: skip
        if self.annotations == "raw_seqs" and not self.mano_model_dir:
            raise ValueError("annotations='raw_seqs' needs mano_model_dir: a folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (MANO licence; METIS cannot ship them). Use annotations='splits' to read ARCTIC's precomputed joints instead.")  # fmt: skip
        if not self.source_fps > 0:
            raise ValueError(f"source_fps must be positive, got {self.source_fps}")


class ArcticSource(IndexedDatasetSource):
    """ARCTIC sequences from the egocentric camera (see the module docstring)."""

    name = "arctic"
    config_class = ArcticConfig
    config: ArcticConfig

    def __init__(self, config: ArcticConfig | None = None) -> None:
        super().__init__(config)
        self._split_cache: dict[Path, dict] = {}

    # -- layout -----------------------------------------------------------------------------

    def _split_paths(self, raw_dir: Path) -> list[Path]:
        return [Path(raw_dir) / "splits" / f"{name.strip()}.npy" for name in self.config.splits.split(",") if name.strip()]  # fmt: skip

    def _split(self, path: Path) -> dict:
        if path not in self._split_cache:
            data = load_pickled_npy(path)
            require_keys(data, ["data_dict"], str(path))
            self._split_cache = {path: data["data_dict"]}  # keep one (they are large)
        return self._split_cache[path]

    def check_layout(self, raw_dir: Path) -> None:
        """Check the files of the chosen ``annotations`` mode.

        Raises:
            FileNotFoundError: Naming the missing folder or file.
            ValueError: Naming a missing key of the first sequence.
        """
        raw_dir = require_path(Path(raw_dir), "ARCTIC's arctic_data/data folder", directory=True)  # fmt: skip
        if self.config.with_images:
            require_path(raw_dir / "meta" / "misc.json", "ARCTIC meta/misc.json (ioi_offset per subject, needed to match ego images)")  # fmt: skip
        if self.config.annotations == "splits":
            for path in self._split_paths(raw_dir):
                require_path(path, f"ARCTIC split file {path.name} (config splits={self.config.splits!r})")  # fmt: skip
            first = self._split_paths(raw_dir)[0]
            data = self._split(first)
            if not data:
                raise ValueError(f"{first}: data_dict holds no sequence")
            key, sequence = next(iter(data.items()))
            require_keys(sequence, ["cam_coord", "params"], f"{first} data_dict[{key!r}]")
            require_keys(sequence["cam_coord"], ["joints.right", "joints.left"], f"{first} data_dict[{key!r}]['cam_coord']")  # fmt: skip
            require_keys(sequence["params"], ["K_ego"], f"{first} data_dict[{key!r}]['params']")
            shape = np.shape(sequence["cam_coord"]["joints.right"])
            if len(shape) != 4 or shape[2:] != (21, 3):
                raise ValueError(f"{first} data_dict[{key!r}]['cam_coord']['joints.right']: expected (T, views, 21, 3), got {shape}")  # fmt: skip
        else:
            require_path(raw_dir / "raw_seqs", "ARCTIC raw_seqs/sXX/<seq>.mano.npy", directory=True)  # fmt: skip
            episodes = self.list_episodes(raw_dir)
            if not episodes:
                raise FileNotFoundError(f"{raw_dir / 'raw_seqs'}: no sXX/<seq>.mano.npy files")
            base = raw_dir / "raw_seqs" / episodes[0]
            mano = load_pickled_npy(base.with_name(base.name + ".mano.npy"))
            for side in ("right", "left"):
                require_keys(mano, [side], f"{base}.mano.npy")
                require_keys(mano[side], ["rot", "pose", "trans", "shape"], f"{base}.mano.npy[{side!r}]")  # fmt: skip
            egocam = load_pickled_npy(require_path(base.with_name(base.name + ".egocam.dist.npy"), "the ego camera poses of the sequence"))  # fmt: skip
            require_keys(egocam, ["R_k_cam_np", "T_k_cam_np", "intrinsics"], f"{base}.egocam.dist.npy")  # fmt: skip
            mano_dir = Path(self.config.mano_model_dir)
            for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
                require_path(mano_dir / name, "a MANO model file from the MANO website (config mano_model_dir)")  # fmt: skip

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Ids ``sXX/<seq>`` (from the split files, or the ``raw_seqs`` folder)."""
        raw_dir = Path(raw_dir)
        if self.config.annotations == "raw_seqs":
            files = sorted((raw_dir / "raw_seqs").glob("s*/*.mano.npy"))
            return [f"{p.parent.name}/{p.name[: -len('.mano.npy')]}" for p in files]
        seen: dict[str, None] = {}
        for path in self._split_paths(raw_dir):
            for key in self._split(path):
                seen.setdefault(str(key), None)
        return list(seen)

    # -- conversion -------------------------------------------------------------------------

    def _from_split(self, raw_dir: Path, episode_id: str) -> tuple[dict, dict, np.ndarray]:
        for path in self._split_paths(raw_dir):
            data = self._split(path)
            if episode_id in data:
                entry = data[episode_id]
                where = f"{path} data_dict[{episode_id!r}]"
                require_keys(entry, ["cam_coord", "params"], where)
                cam = entry["cam_coord"]
                require_keys(cam, ["joints.right", "joints.left"], f"{where}['cam_coord']")
                require_keys(entry["params"], ["K_ego"], f"{where}['params']")
                joints = {side: np.asarray(cam[f"joints.{side}"], np.float64)[:, 0] for side in ("left", "right")}  # fmt: skip
                # Note: the validity flags are optional in our reading; without them every
                # frame counts as valid (ARCTIC's MANO fits cover every frame).
                valid = {side: np.asarray(cam[f"{side}_valid"])[:, 0] > 0.5 if f"{side}_valid" in cam else np.ones(len(joints[side]), bool) for side in ("left", "right")}  # fmt: skip
                return joints, valid, np.asarray(entry["params"]["K_ego"], np.float64).reshape(-1, 3, 3)[0]  # fmt: skip
        raise SkipEpisode(f"{episode_id} is in none of the split files {self.config.splits!r}")

    def mano_joints(self, side: str, params: dict[str, np.ndarray]) -> np.ndarray:
        """21 joints ``(T, 21, 3)`` (smplx order + tips) of MANO parameters, in their frame.

        Uses ``smplx.MANO(mano_model_dir, is_rhand=..., use_pca=False, flat_hand_mean=False)``,
        ARCTIC's own settings. Tests replace this method with a stand-in layer.
        """
        torch = require("torch", install="torch")
        layer = _mano_layer(self.config.mano_model_dir, side)
        frames = len(params["rot"])
        shape = np.broadcast_to(np.asarray(params["shape"], np.float32).reshape(-1, 10)[:1] if np.ndim(params["shape"]) == 1 else params["shape"], (frames, 10))  # fmt: skip
        with torch.no_grad():
            output = layer(
                global_orient=torch.as_tensor(params["rot"], dtype=torch.float32),
                hand_pose=torch.as_tensor(params["pose"], dtype=torch.float32),
                betas=torch.as_tensor(np.ascontiguousarray(shape), dtype=torch.float32),
                transl=torch.as_tensor(params["trans"], dtype=torch.float32),
            )
        joints = output.joints.double().numpy()
        if joints.shape[1:] != (21, 3):
            raise ValueError(f"MANO layer returned joints of shape {joints.shape[1:]}, expected (21, 3) (16 joints + 5 fingertips); check the smplx version")  # fmt: skip
        return joints

    def _from_raw(self, raw_dir: Path, episode_id: str) -> tuple[dict, dict, np.ndarray]:
        base = Path(raw_dir) / "raw_seqs" / episode_id
        mano = load_pickled_npy(base.with_name(base.name + ".mano.npy"))
        egocam = load_pickled_npy(base.with_name(base.name + ".egocam.dist.npy"))
        require_keys(egocam, ["R_k_cam_np", "T_k_cam_np", "intrinsics"], f"{base}.egocam.dist.npy")  # fmt: skip
        rotation = np.asarray(egocam["R_k_cam_np"], np.float64).reshape(-1, 3, 3)
        translation = np.asarray(egocam["T_k_cam_np"], np.float64).reshape(-1, 3)
        joints, valid = {}, {}
        for side in ("left", "right"):
            require_keys(mano, [side], f"{base}.mano.npy")
            require_keys(mano[side], ["rot", "pose", "trans", "shape"], f"{base}.mano.npy[{side!r}]")  # fmt: skip
            world = self.mano_joints(side, {k: np.asarray(mano[side][k]) for k in ("rot", "pose", "trans", "shape")})  # fmt: skip
            frames = min(len(world), len(rotation))
            joints[side] = np.einsum("tij,tkj->tki", rotation[:frames], world[:frames]) + translation[:frames, None]  # fmt: skip
            valid[side] = np.ones(frames, dtype=bool)
        frames = min(len(joints["left"]), len(joints["right"]))
        joints = {k: v[:frames] for k, v in joints.items()}
        valid = {k: v[:frames] for k, v in valid.items()}
        return joints, valid, np.asarray(egocam["intrinsics"], np.float64).reshape(3, 3)

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one sequence ``sXX/<seq>``."""
        config = self.config
        raw_dir = Path(raw_dir)
        reader = self._from_split if config.annotations == "splits" else self._from_raw
        joints, valid, intrinsics = reader(raw_dir, episode_id)
        vectors, mask = hands_to_contract(joints["left"], joints["right"], layout=MANO_SMPLX_21, left_present=valid["left"], right_present=valid["right"])  # fmt: skip
        frames = np.arange(len(vectors))
        subject, sequence = episode_id.split("/", 1)
        images = None
        metadata: dict[str, Any] = {"arctic_sequence": episode_id, "camera_intrinsics": intrinsics.tolist()}  # fmt: skip
        if config.with_images:
            misc = read_json(raw_dir / "meta" / "misc.json")
            require_keys(misc, [subject], str(raw_dir / "meta" / "misc.json"))
            require_keys(misc[subject], ["ioi_offset"], f"{raw_dir / 'meta' / 'misc.json'}[{subject!r}]")  # fmt: skip
            offset = int(misc[subject]["ioi_offset"])
            folder = raw_dir / "images" / subject / sequence / "0"
            paths = [folder / f"{frame + offset:05d}.jpg" for frame in frames]
            # Note: ARCTIC's ego images keep the lens distortion (dist8); the stored K is the
            # pinhole part, as ARCTIC's own projection of view 0 uses it.
            images, k = load_ego_images(paths, config, intrinsics)
            metadata["camera_intrinsics"] = k.tolist()
        return build_episode(
            vectors,
            mask,
            frames / config.source_fps,
            target_fps=config.target_fps,
            source=self.name,
            instruction=instruction_for(sequence),
            images=images,
            metadata=metadata,
        )


@functools.lru_cache(maxsize=2)
def _mano_layer(model_dir: str, side: str) -> Any:
    smplx = require("smplx", install="smplx", feature="reading ARCTIC raw_seqs (MANO parameters)")
    return smplx.MANO(model_dir, is_rhand=side == "right", use_pca=False, flat_hand_mean=False)
