"""What the policy server does, without the web framework: parse, infer, answer, count.

:class:`PolicyService` turns a decoded request body into a call of the policy's
``predict_action`` and its result into an answer body; :func:`parse_observation` validates a
request and raises :class:`RequestError` (with an HTTP status) naming what is wrong.
:mod:`metis_core.serve.app` puts both behind FastAPI routes.

Requests (the authors' and OpenVLA-OFT clients' fields):

======================= ===================================================================
``instruction``         the task, a non-empty string
``image``               uint8 RGB, ``(H, W, 3)`` (OpenVLA / OFT) or ``(3, H, W)`` (the METIS
                        release's server), optionally with a leading batch axis of 1; a
                        json-numpy array or nested lists of 0-255 integers. ``full_image``
                        (OFT's name) is accepted for it.
``state``               the 48 contract floats (``(48,)`` or ``(1, 48)``), finite
``unnorm_key``          optional: which dataset's statistics un-normalise the actions
``embodiment``          optional: a hand (registry name) whose IK turns the chunk into joint
                        commands; the answer then holds them (see below)
``hand_mask``           optional: ``[left, right]`` presence booleans (default both)
``session_id``          optional: keep the subtask (and the IK warm start) between calls of one
                        episode under this id; ``reset: true`` starts it afresh
======================= ===================================================================

A body ``{"encoded": "<JSON text of the request>"}`` (the release's double-encoded form) is read
the same way and answered with a JSON string holding the json-numpy answer.

The answer is the ``(C, 48)`` float32 chunk. With an embodiment (in the request or the server's
config) it is ``{"actions": chunk, "joints": {side: (C, J) float32 radians}, "joint_names":
{side: [...]}}``, plus ``"commands": {side: (C, 6)}`` in Unitree's convention for hands that
have one (Inspire: 0-1, 1 = open, in ``command_order``).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metis_core.contract import ACTION_DIM
from metis_core.serve.wire import WireError

__all__ = ["Observation", "PolicyService", "RequestError", "ServerConfig", "parse_observation"]

logger = logging.getLogger("metis.serve")

_MAX_SIDE = 4096
_MIN_SIDE = 8
_MAX_INSTRUCTION = 2000
_MAX_SESSIONS = 64


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerConfig:
    """Settings of :class:`PolicyService` and the server around it.

    Args:
        host: Address to bind (``0.0.0.0`` to be reachable from a robot on the network).
        port: TCP port (8777, the authors' and OFT's).
        embodiment: Default hand for joint commands in every answer (``None``: only when a
            request names one; the answer is then the bare chunk, a drop-in for OFT clients).
        unnorm_key: Default statistics key.
        legacy_errors: Answer failures as the authors' server does, the bare string ``"error"``
            with HTTP 200 (for clients that test for it); off: a 4xx/5xx JSON error.
        max_body_bytes: Largest request body accepted (413 beyond).
        predict_options: Extra keyword arguments of every ``predict_action`` call (e.g.
            ``{"temperature": 0.75, "top_p": 0.9}``).
    """

    host: str = "127.0.0.1"
    port: int = 8777
    embodiment: str | None = None
    unnorm_key: str | None = None
    legacy_errors: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    predict_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Observation:
    """A validated request."""

    instruction: str
    image: np.ndarray  # (H, W, 3) uint8
    state: np.ndarray  # (48,) float32
    unnorm_key: str | None = None
    embodiment: str | None = None
    hand_mask: np.ndarray | None = None
    session_id: str | None = None
    reset: bool = False
    encoded: bool = False


def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 200:
        raise RequestError(f"'{key}' must be a non-empty string of at most 200 characters, got {value!r:.80}")  # fmt: skip
    return value


def _image(value: Any) -> np.ndarray:
    from_lists = isinstance(value, (list, tuple))
    if from_lists:
        try:
            value = np.asarray(value)
        except ValueError as err:  # ragged lists
            raise RequestError(f"'image' must be a rectangular uint8 array, got ragged lists ({err})") from None  # fmt: skip
    if not isinstance(value, np.ndarray):
        raise RequestError(f"'image' must be a uint8 array (json-numpy or nested lists), got {type(value).__name__}")  # fmt: skip
    if value.dtype != np.uint8:
        # Plain JSON lists of 0-255 integers arrive as int64; a typed array must be uint8.
        if from_lists and value.dtype.kind == "i" and value.size and value.min() >= 0 and value.max() <= 255:  # fmt: skip
            value = value.astype(np.uint8)
        else:
            raise RequestError(f"'image' must hold uint8 RGB values 0-255, got {'lists of ' if from_lists else 'dtype '}{value.dtype}")  # fmt: skip
    if value.ndim == 4 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 3:
        raise RequestError(f"'image' must have shape (H, W, 3) or (3, H, W), got {value.shape}")
    if value.shape[-1] != 3 and value.shape[0] == 3:
        value = np.transpose(value, (1, 2, 0))  # CHW, as the release's clients send it
    if value.shape[-1] != 3:
        raise RequestError(f"'image' must have shape (H, W, 3) or (3, H, W), got {value.shape}")
    height, width = value.shape[:2]
    if not (_MIN_SIDE <= height <= _MAX_SIDE and _MIN_SIDE <= width <= _MAX_SIDE):
        raise RequestError(f"'image' sides must be {_MIN_SIDE}-{_MAX_SIDE} pixels, got {height}×{width}")  # fmt: skip
    return np.ascontiguousarray(value)


def _state(value: Any) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in np.ravel(np.asarray(value, dtype=object))):  # fmt: skip
            raise RequestError(f"'state' must be {ACTION_DIM} numbers")
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray):
        raise RequestError(f"'state' must be {ACTION_DIM} floats (json-numpy array or list), got {type(value).__name__}")  # fmt: skip
    if value.dtype.kind not in "fiu":
        raise RequestError(f"'state' must be numeric, got dtype {value.dtype}")
    if value.shape not in ((ACTION_DIM,), (1, ACTION_DIM)):
        raise RequestError(f"'state' must have shape ({ACTION_DIM},) (the hand contract), got {value.shape}")  # fmt: skip
    state = value.reshape(ACTION_DIM).astype(np.float32)
    if not np.isfinite(state).all():
        raise RequestError("'state' contains NaN or infinity")
    return state


def parse_observation(body: Any) -> Observation:
    """Validate a decoded request body (see the module docstring).

    Raises:
        RequestError: Naming the first problem found (status 400).
    """
    encoded = False
    if isinstance(body, dict) and set(body) == {"encoded"}:
        from metis_core.serve import wire

        if not isinstance(body["encoded"], str):
            raise RequestError("'encoded' must be a string holding the JSON text of the request")
        try:
            body = wire.loads(body["encoded"])
        except WireError as err:
            raise RequestError(f"'encoded': {err}") from None
        encoded = True
    if not isinstance(body, dict):
        raise RequestError(f"expected a JSON object with 'instruction', 'image' and 'state', got {type(body).__name__}")  # fmt: skip
    if "image" not in body and "full_image" in body:
        body = {**body, "image": body["full_image"]}
    missing = [k for k in ("instruction", "image", "state") if k not in body]
    if missing:
        raise RequestError(f"missing field(s) {missing}; a request needs 'instruction', 'image' and 'state'")  # fmt: skip
    instruction = body["instruction"]
    if not isinstance(instruction, str) or not instruction.strip():
        raise RequestError(f"'instruction' must be a non-empty string, got {instruction!r:.80}")
    if len(instruction) > _MAX_INSTRUCTION:
        raise RequestError(f"'instruction' is longer than {_MAX_INSTRUCTION} characters")
    hand_mask = body.get("hand_mask")
    if hand_mask is not None:
        mask = np.asarray(hand_mask)
        if mask.shape != (2,) or mask.dtype.kind not in "bui" or not np.isin(mask, (0, 1)).all():
            raise RequestError(f"'hand_mask' must be two booleans [left, right], got {hand_mask!r:.80}")  # fmt: skip
        hand_mask = mask.astype(bool)
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise RequestError(f"'reset' must be true or false, got {reset!r:.40}")
    return Observation(
        instruction=instruction,
        image=_image(body["image"]),
        state=_state(body["state"]),
        unnorm_key=_optional_str(body, "unnorm_key"),
        embodiment=_optional_str(body, "embodiment"),
        hand_mask=hand_mask,
        session_id=_optional_str(body, "session_id"),
        reset=reset,
        encoded=encoded,
    )


class _Latencies:
    """Counts and a window of recent latencies for ``GET /metrics``."""

    def __init__(self, window: int = 2048) -> None:
        self.started = time.time()
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.total_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.stages: dict[str, collections.deque[float]] = {}
        self.lock = threading.Lock()

    def record(self, status: int, total_ms: float, stages: dict[str, float] | None) -> None:
        with self.lock:
            self.requests += 1
            self.by_status[status] += 1
            if status == 200:
                self.total_ms.append(total_ms)
                for name, ms in (stages or {}).items():
                    self.stages.setdefault(name, collections.deque(maxlen=self.total_ms.maxlen)).append(ms)  # fmt: skip

    @staticmethod
    def _summary(values: collections.deque[float]) -> dict[str, float | int | None]:
        if not values:
            return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
        ordered = sorted(values)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

        return {"count": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 3)}  # fmt: skip

    def snapshot(self, in_flight: int) -> dict[str, Any]:
        with self.lock:
            errors = sum(n for status, n in self.by_status.items() if status >= 400)
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "requests": self.requests,
                "errors": errors,
                "responses_by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "in_flight": in_flight,
                "latency_ms": self._summary(self.total_ms),
                "stage_ms": {name: self._summary(v) for name, v in self.stages.items()},
            }


class PolicyService:
    """A policy behind a lock, with request parsing, sessions, joint commands and metrics.

    Args:
        policy: Anything with ``predict_action(images, instruction, state, **options)``
            returning a :class:`~metis_core.vla.modeling_metis.ActionPrediction` or a ``(C, 48)`` array; a
            :class:`~metis_core.vla.modeling_metis.MetisPolicy` gets the optional fields (statistics key, hand,
            sessions) passed on.
        config: Server settings.
    """

    def __init__(self, policy: Any, config: ServerConfig | None = None) -> None:
        self.policy = policy
        self.config = config or ServerConfig()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self.metrics = _Latencies()
        self._sessions: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._hands: dict[tuple[str, str], Any] = {}

    @property
    def busy(self) -> bool:
        """Whether an inference is running."""
        return self._lock.locked()

    @property
    def in_flight(self) -> int:
        """Requests being inferred or waiting for the policy."""
        return self._in_flight

    def describe(self) -> dict[str, Any]:
        """What ``GET /health`` reports about the policy."""
        config = getattr(self.policy, "config", None)
        info: dict[str, Any] = {"policy": type(self.policy).__name__}
        if config is not None:
            for name in ("backbone", "chunk_len", "embodiment"):
                if hasattr(config, name):
                    info[name] = getattr(config, name)
        normalization = getattr(self.policy, "normalization", None)
        if normalization is not None and hasattr(normalization, "keys"):
            keys = normalization.keys
            info["unnorm_keys"] = list(keys() if callable(keys) else keys)
        return info

    def _session(self, observation: Observation, embodiment: str | None) -> Any:
        if observation.session_id is None or not hasattr(self.policy, "new_session"):
            return None
        session = self._sessions.pop(observation.session_id, None)
        if session is None:
            session = self.policy.new_session(unnorm_key=observation.unnorm_key or self.config.unnorm_key, embodiment=embodiment)  # fmt: skip
        elif observation.reset:
            session.reset()
        self._sessions[observation.session_id] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def act(self, observation: Observation) -> tuple[Any, dict[str, float]]:
        """Run the policy on one observation.

        Returns:
            ``(answer, timings_ms)``: the answer body before encoding (the chunk, or the dict
            with joint commands) and per-stage milliseconds (``queue`` = waiting for the policy).

        Raises:
            RequestError: For a request the policy refuses (bad statistics key, unknown hand:
                400) or a failure inside the policy (500).
        """
        with self._count_lock:
            self._in_flight += 1
        queued = time.perf_counter()
        try:
            with self._lock:
                waited = time.perf_counter() - queued
                return self._act_locked(observation, waited)
        finally:
            with self._count_lock:
                self._in_flight -= 1

    def _act_locked(self, observation: Observation, waited: float) -> tuple[Any, dict[str, float]]:
        embodiment = observation.embodiment or self.config.embodiment
        is_metis = hasattr(self.policy, "new_session")
        options = dict(self.config.predict_options)
        if is_metis:
            options["unnorm_key"] = observation.unnorm_key or self.config.unnorm_key
            options["embodiment"] = embodiment
            if observation.hand_mask is not None:
                options["hand_mask"] = observation.hand_mask
        elif observation.embodiment is not None:
            raise RequestError(f"this server's policy ({type(self.policy).__name__}) computes no joint commands")  # fmt: skip
        if embodiment is not None:  # an unknown hand is refused before any inference
            from metis_core.registry import EMBODIMENTS

            try:
                EMBODIMENTS.get(embodiment)
            except LookupError as err:
                raise RequestError(str(err)) from None
        start = time.perf_counter()
        try:
            session = self._session(observation, embodiment) if is_metis else None
            runner = session if session is not None else self.policy
            if session is not None:
                options.pop("unnorm_key", None)
                options.pop("embodiment", None)
            result = runner.predict_action(observation.image, observation.instruction, observation.state, **options)  # fmt: skip
        except LookupError as err:  # unknown hand, statistics key missing or ambiguous (listed)
            raise RequestError(str(err.args[0] if err.args else err)) from None
        except ValueError as err:
            raise RequestError(str(err)) from None
        except Exception as err:
            logger.exception("policy failed")
            raise RequestError(f"the policy failed: {type(err).__name__}: {err}", status=500) from None  # fmt: skip
        timings = {"queue": 1e3 * waited}
        for name, seconds in (getattr(result, "timings", None) or {}).items():
            timings[name] = 1e3 * seconds
        timings["policy"] = 1e3 * (time.perf_counter() - start)
        actions = np.asarray(getattr(result, "actions", result), dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise RequestError(f"the policy returned actions of shape {actions.shape}, expected (C, {ACTION_DIM})", status=500)  # fmt: skip
        joints = getattr(result, "joints", None)
        if embodiment is None or joints is None:
            return actions, timings
        return self._with_joints(actions, joints, embodiment), timings

    def _with_joints(self, actions: np.ndarray, joints: dict[str, np.ndarray], embodiment: str) -> dict[str, Any]:  # fmt: skip
        from metis_core.registry import EMBODIMENTS

        answer: dict[str, Any] = {"actions": actions, "joints": {}, "joint_names": {}}
        commands: dict[str, np.ndarray] = {}
        for side, values in joints.items():
            hand = self._hands.get((embodiment, side))
            if hand is None:  # the policy's own instance where it has one (built for its IK)
                shared = getattr(self.policy, "_embodiment", None)
                hand = shared(embodiment, side) if callable(shared) else EMBODIMENTS.create(embodiment, side=side)  # fmt: skip
                self._hands[(embodiment, side)] = hand
            answer["joints"][side] = np.asarray(values, dtype=np.float32)
            answer["joint_names"][side] = list(hand.joint_names)
            to_command = getattr(hand, "to_unitree_command", None)
            if to_command is not None:
                import torch

                commands[side] = to_command(torch.as_tensor(values, dtype=torch.float64)).float().numpy()  # fmt: skip
                answer.setdefault("command_order", {})[side] = list(hand.config.command_order)
        if commands:
            answer["commands"] = commands
        return answer


def new_request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` if it is a sane token, else a new random id."""
    if given and len(given) <= 64 and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return uuid.uuid4().hex[:16]


def server_timing(timings_ms: dict[str, float]) -> str:
    """A ``Server-Timing`` header value (``stage;dur=ms, ...``)."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings_ms.items())
