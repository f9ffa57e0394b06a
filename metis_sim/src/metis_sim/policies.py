"""Policies the evaluator can drive, and how a ``--policy`` argument names one.

Everything here satisfies :class:`metis_core.interfaces.Policy`
(``predict_action(images, instruction, state)`` → ``(C, 48)``); an optional ``reset(seed=...)``
is called at the start of each episode.

* :class:`RandomPolicy` — a random walk around the current state (the 0 % baseline);
* :class:`NearestNeighbourReplay` — replays recorded demonstrations from the recorded frame
  nearest to the current observation (state and a small grey image): a non-parametric policy
  that works through any interface, the server's included;
* :class:`ScheduledReplay` — plays the recorded contract actions of the demonstration with the
  same seed, open loop (the contract + IK round-trip check);
* :class:`HTTPPolicy` — a client of a ``POST /act`` server (json-numpy, see :mod:`metis_sim.wire`);
* a saved METIS policy directory (``metis_core.vla``, loaded lazily).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from metis_core.contract import HAND_LAYOUTS
from metis_sim import wire

__all__ = [
    "HTTPPolicy",
    "NearestNeighbourReplay",
    "RandomPolicy",
    "ScheduledReplay",
    "as_chunk",
    "load_policy",
]


def as_chunk(prediction: Any) -> np.ndarray:
    """A policy's output (array, tensor or object with ``.actions``) → ``(C, 48)`` float32.

    Raises:
        ValueError: For another shape or non-finite values.
    """
    actions = getattr(prediction, "actions", prediction)
    if hasattr(actions, "detach"):
        actions = actions.detach().cpu().numpy()
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim == 3 and actions.shape[0] == 1:
        actions = actions[0]
    if actions.ndim != 2 or actions.shape[1] != 48 or actions.shape[0] < 1:
        raise ValueError(f"policy returned actions of shape {actions.shape}; expected a (C, 48) chunk in the hand contract")  # fmt: skip
    if not np.isfinite(actions).all():
        raise ValueError("policy returned NaN or infinite actions")
    return actions


class RandomPolicy:
    """A random walk from the current state: wrists ±1 cm and fingertips ±3 mm per step (σ).

    Args:
        chunk_len: Actions per chunk.
        seed: Seed of the walk.
    """

    def __init__(self, *, chunk_len: int = 30, seed: int = 0) -> None:
        self.chunk_len = chunk_len
        self.rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed + 7_000_000)

    def predict_action(self, images: Any, instruction: str, state: Any) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(48)
        noise = np.zeros((self.chunk_len, 48))
        for layout in HAND_LAYOUTS.values():
            noise[:, layout.wrist_position] = self.rng.normal(0, 0.01, (self.chunk_len, 3))
            noise[:, layout.fingertips] = self.rng.normal(0, 0.003, (self.chunk_len, 15))
        return (state + np.cumsum(noise, axis=0)).astype(np.float32)


def _small_grey(image: np.ndarray, size: int = 32) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    grey = image.mean(axis=-1)
    grey = grey[: height - height % size, : width - width % size]
    return grey.reshape(size, grey.shape[0] // size, size, grey.shape[1] // size).mean(axis=(1, 3)).reshape(-1) / 255.0  # fmt: skip


def _recorded_episodes(dataset: str | Path, *, with_images: bool):  # type: ignore[no-untyped-def]
    """Yield the episodes of a recorded dataset one at a time (frames are large)."""
    from metis_datasets.lerobot_format import LeRobotDataset

    opened = LeRobotDataset(dataset)
    for i in range(len(opened.episodes)):
        yield opened.episode(i, with_images=with_images)


class NearestNeighbourReplay:
    """Replays demonstrations from the recorded frame nearest to the observation.

    The distance is ``‖Δstate‖ (metres) + image_weight · RMS(Δ 32×32 grey image)``, over every
    ``stride``-th frame of the dataset; the reply is the recorded actions from that frame on.

    Args:
        dataset: A LeRobot dataset recorded by ``metis-sim record``.
        chunk_len: Actions per chunk.
        stride: Frames between candidates.
        image_weight: Weight of the image term (the object poses are only in the image).
    """

    def __init__(self, dataset: str | Path, *, chunk_len: int = 30, stride: int = 3, image_weight: float = 1.0) -> None:  # fmt: skip
        self.chunk_len, self.image_weight = chunk_len, image_weight
        states, images, index = [], [], []
        self.actions, self.seeds = [], []
        for e, ep in enumerate(_recorded_episodes(dataset, with_images=True)):
            if "ego" not in ep.images:
                raise ValueError(f"{dataset}: episode {e} has no ego video; record with images for a nearest-neighbour replay")  # fmt: skip
            frames = ep.images["ego"]
            for t in range(0, ep.length, stride):
                states.append(ep.state[t])
                images.append(_small_grey(frames[t]))
                index.append((e, t))
            self.actions.append(ep.action)
            self.seeds.append(int(ep.metadata.get("seed", e)))
        self.states = np.asarray(states, np.float32)
        self.images = np.asarray(images, np.float32)
        self.index = index

    def predict_action(self, images: Any, instruction: str, state: Any) -> np.ndarray:
        state = np.asarray(state, np.float32).reshape(48)
        image = np.asarray(images)
        image = image[0] if image.ndim == 4 else image
        cost = np.linalg.norm(self.states - state, axis=1) + self.image_weight * np.sqrt(((self.images - _small_grey(image)) ** 2).mean(axis=1))  # fmt: skip
        episode, t = self.index[int(np.argmin(cost))]
        actions = self.actions[episode][t : t + self.chunk_len]
        if len(actions) < self.chunk_len:  # past the end: hold the last action
            actions = np.concatenate([actions, np.repeat(self.actions[episode][-1:], self.chunk_len - len(actions), axis=0)])  # fmt: skip
        return actions.astype(np.float32)


class ScheduledReplay:
    """Plays the recorded contract actions of the demonstration with the episode's seed.

    Args:
        dataset: A LeRobot dataset recorded by ``metis-sim record``.
        chunk_len: Actions per chunk.
    """

    def __init__(self, dataset: str | Path, *, chunk_len: int = 30) -> None:
        self.chunk_len = chunk_len
        self.by_seed = {int(ep.metadata.get("seed", e)): ep.action for e, ep in enumerate(_recorded_episodes(dataset, with_images=False))}  # fmt: skip
        self.seeds = list(self.by_seed)
        self._actions: np.ndarray | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None) -> None:
        if seed not in self.by_seed:
            raise ValueError(f"no recorded demonstration with seed {seed}; recorded seeds are {self.seeds[:10]}...")  # fmt: skip
        self._actions, self._t = self.by_seed[seed], 0

    def predict_action(self, images: Any, instruction: str, state: Any) -> np.ndarray:
        if self._actions is None:
            raise RuntimeError("ScheduledReplay.predict_action before reset(seed=...)")
        chunk = self._actions[self._t : self._t + self.chunk_len]
        self._t += self.chunk_len
        if len(chunk) < self.chunk_len:
            chunk = np.concatenate([chunk, np.repeat(self._actions[-1:], self.chunk_len - len(chunk), axis=0)])  # fmt: skip
        return chunk.astype(np.float32)


class HTTPPolicy:
    """Client of a policy server: ``POST {url}/act`` with json-numpy bodies.

    Args:
        url: Server base URL (``http://127.0.0.1:8777``) or the full ``/act`` URL.
        timeout_s: Per-request timeout.
    """

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        self.url = url if url.rstrip("/").endswith("/act") else url.rstrip("/") + "/act"
        self.timeout_s = timeout_s

    def predict_action(self, images: Any, instruction: str, state: Any) -> np.ndarray:
        image = np.asarray(images, dtype=np.uint8)
        body = wire.dumps({"instruction": instruction, "image": image, "state": np.asarray(state, np.float32).reshape(48)})  # fmt: skip
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = response.read(wire.MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"policy server {self.url} answered {err.code}: {err.read(2000).decode(errors='replace')}") from err  # fmt: skip
        except urllib.error.URLError as err:
            raise ConnectionError(f"cannot reach the policy server at {self.url}: {err.reason}") from err  # fmt: skip
        if len(reply) > wire.MAX_BODY_BYTES:
            raise RuntimeError(
                f"policy server {self.url} sent more than {wire.MAX_BODY_BYTES} bytes"
            )
        decoded = wire.loads(reply)
        if isinstance(decoded, dict):
            decoded = decoded.get("actions", decoded.get("action"))
        return as_chunk(decoded)


class _MetisCheckpoint:
    def __init__(self, path: Path, embodiment: str, unnorm_key: str | None = None) -> None:
        try:
            from metis_core.vla import MetisPolicy, PolicySession
        except ImportError as err:
            raise ImportError("evaluating a METIS checkpoint needs the VLA extra: pip install 'metis-core[vla]'") from err  # fmt: skip
        # No joint commands: the simulator solves the IK of the contract actions itself.
        self.session = PolicySession(MetisPolicy.from_pretrained(path), embodiment=None, unnorm_key=unnorm_key)  # fmt: skip

    def reset(self, *, seed: int | None = None) -> None:
        self.session.reset()

    def predict_action(self, images: Any, instruction: str, state: Any) -> Any:
        return self.session.predict_action(images, instruction, state)


def load_policy(spec: str, *, chunk_len: int = 30, embodiment: str = "inspire", unnorm_key: str | None = None) -> Any:  # fmt: skip
    """A policy from a ``--policy`` argument.

    ``random``; ``replay:DATASET`` (nearest-neighbour replay); ``schedule:DATASET`` (open-loop
    replay by seed); ``http://HOST:PORT`` (a ``/act`` server); or a saved METIS policy directory
    (``unnorm_key``: which dataset's statistics, for a policy trained on several).

    Raises:
        ValueError: For an argument that names none of these.
    """
    if spec == "random":
        return RandomPolicy(chunk_len=chunk_len)
    if spec.startswith("replay:"):
        return NearestNeighbourReplay(spec[len("replay:") :], chunk_len=chunk_len)
    if spec.startswith("schedule:"):
        return ScheduledReplay(spec[len("schedule:") :], chunk_len=chunk_len)
    if spec.startswith(("http://", "https://")):
        return HTTPPolicy(spec)
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        return _MetisCheckpoint(path, embodiment, unnorm_key)
    raise ValueError(f"--policy {spec!r}: expected 'random', 'replay:DATASET', 'schedule:DATASET', an http(s):// URL of a /act server, or a saved METIS policy directory")  # fmt: skip
