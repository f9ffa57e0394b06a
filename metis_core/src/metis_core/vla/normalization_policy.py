"""Normalisation of the policy's proprio input and action output, stored in its checkpoint.

A policy trained on a mixture keeps one set of statistics per dataset key (``"synthetic"``,
``"real_g1"``, ...), each with the statistics of ``observation.state`` and ``action``, and one
explicit mode. At inference the key must be named when there is more than one: a missing or
ambiguous key raises with the choices (openvla/openvla#87), never a silent pass-through
(huggingface/lerobot#4415).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metis_core.contract import ACTION_DIM, hand_value_mask
from metis_core.normalization import Normalizer, NormMode, NormStats

__all__ = ["FEATURES", "PolicyNormalization"]

#: The features a policy normalises.
FEATURES = ("observation.state", "action")
_FORMAT_VERSION = 1


@dataclass
class PolicyNormalization:
    """Statistics per dataset key and the mode they are applied with.

    Args:
        mode: How values are normalised (:class:`~metis_core.normalization.NormMode`).
        stats: ``{dataset_key: {"observation.state": NormStats, "action": NormStats}}``.
        default_key: Key used when none is given (``None``: the only key, else an error).
    """

    mode: NormMode
    stats: dict[str, dict[str, NormStats]] = field(default_factory=dict)
    default_key: str | None = None

    def __post_init__(self) -> None:
        self.mode = NormMode.parse(self.mode)
        for key, features in self.stats.items():
            missing = [f for f in FEATURES if f not in features]
            if missing:
                raise ValueError(
                    f"normalisation statistics {key!r} lack {missing}; each dataset key needs "
                    f"{list(FEATURES)}"
                )
            for name in FEATURES:
                stats = features[name]
                if stats.dim != ACTION_DIM:
                    raise ValueError(
                        f"normalisation statistics {key!r}/{name!r} describe {stats.dim} values, "
                        f"expected the {ACTION_DIM} of the hand contract"
                    )
                for stat in ("mean", "std", "min", "max", "q01", "q99"):
                    values = np.asarray(getattr(stats, stat), dtype=np.float64)
                    if not np.isfinite(values).all():
                        raise ValueError(
                            f"normalisation statistics {key!r}/{name!r}: {stat} holds NaN or infinity"
                        )
                if (np.asarray(stats.std) < 0).any():
                    raise ValueError(f"normalisation statistics {key!r}/{name!r}: negative std")
        if self.default_key is not None and self.default_key not in self.stats:
            raise ValueError(
                f"default_key {self.default_key!r} is not among the statistics {sorted(self.stats)}"
            )
        self._normalizers: dict[tuple[str, str], Normalizer] = {}

    @classmethod
    def identity(cls) -> PolicyNormalization:
        """No normalisation (explicitly chosen; values pass unchanged)."""
        return cls(mode=NormMode.IDENTITY)

    @classmethod
    def from_dataset_stats(
        cls, stats: Mapping[str, Any], *, key: str, mode: NormMode | str = NormMode.Q01_Q99
    ) -> PolicyNormalization:
        """From a LeRobot ``meta/stats.json`` mapping (feature → statistics dict or NormStats).

        Raises:
            ValueError: If ``observation.state`` or ``action`` is missing.
        """
        features = {}
        for name in FEATURES:
            if name not in stats:
                raise ValueError(
                    f"dataset statistics lack {name!r} (have {sorted(stats)}); expected "
                    f"{list(FEATURES)}"
                )
            value = stats[name]
            features[name] = value if isinstance(value, NormStats) else NormStats.from_dict(value)
        return cls(mode=NormMode.parse(mode), stats={key: features})

    def merged(self, other: PolicyNormalization) -> PolicyNormalization:
        """Both sets of keys (same mode; a key in both raises)."""
        if other.mode is not self.mode:
            raise ValueError(f"cannot merge statistics of modes {self.mode.value} and {other.mode.value}")  # fmt: skip
        clash = sorted(set(self.stats) & set(other.stats))
        if clash:
            raise ValueError(f"dataset keys {clash} are in both statistics")
        return PolicyNormalization(mode=self.mode, stats={**self.stats, **other.stats})

    # -- lookup ------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Dataset keys with statistics."""
        return sorted(self.stats)

    def resolve_key(self, key: str | None) -> str | None:
        """The dataset key to use (``None`` in identity mode).

        Raises:
            KeyError: For an unknown key, or no key when several are stored; lists the choices.
        """
        if self.mode is NormMode.IDENTITY:
            return None
        if not self.stats:
            raise KeyError(
                f"normalisation mode {self.mode.value!r} but the policy holds no statistics; "
                "set them with policy.set_normalization(...) (or choose mode 'identity')"
            )
        if key is None:
            key = self.default_key
        if key is None:
            if len(self.stats) == 1:
                return next(iter(self.stats))
            raise KeyError(
                f"the policy holds statistics of several datasets {self.keys}; say which with "
                "unnorm_key=..."
            )
        if key not in self.stats:
            raise KeyError(f"no normalisation statistics for {key!r}; choose one of {self.keys}")
        return key

    def _normalizer(self, key: str, feature: str) -> Normalizer:
        cached = self._normalizers.get((key, feature))
        if cached is None:
            cached = Normalizer(self.stats[key][feature], self.mode)
            self._normalizers[(key, feature)] = cached
        return cached

    def _apply(
        self, values: torch.Tensor, feature: str, key: str | None, hand_mask: Any, inverse: bool
    ) -> torch.Tensor:
        if values.shape[-1] != ACTION_DIM:
            raise ValueError(f"{feature}: expected (..., {ACTION_DIM}) values, got {tuple(values.shape)}")  # fmt: skip
        resolved = self.resolve_key(key)
        if resolved is None:
            out = values.clone()
        else:
            normalizer = self._normalizer(resolved, feature)
            out = normalizer.unnormalize(values) if inverse else normalizer.normalize(values)
        if hand_mask is not None:
            mask = torch.as_tensor(hand_mask, dtype=torch.bool, device=values.device)
            valid = hand_value_mask(mask).to(values.device)
            while valid.dim() < out.dim():
                valid = valid.unsqueeze(-2)
            out = torch.where(valid, out, torch.zeros_like(out))
        return out

    def normalize(
        self, values: torch.Tensor, feature: str, *, key: str | None = None, hand_mask: Any = None
    ) -> torch.Tensor:
        """Raw contract values → normalised; a missing hand's values become exactly 0.

        Args:
            values: ``(..., 48)``.
            feature: ``"observation.state"`` or ``"action"``.
            key: Dataset key (see :meth:`resolve_key`).
            hand_mask: ``(..., 2)`` presence, broadcast over the frames of a chunk.
        """
        return self._apply(values, feature, key, hand_mask, inverse=False)

    def unnormalize(
        self, values: torch.Tensor, feature: str, *, key: str | None = None, hand_mask: Any = None
    ) -> torch.Tensor:
        """Inverse of :meth:`normalize` (a missing hand's values come back as 0)."""
        return self._apply(values, feature, key, hand_mask, inverse=True)

    # -- save / load -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``normalization.json`` of a checkpoint)."""
        return {
            "format_version": _FORMAT_VERSION,
            "mode": self.mode.value,
            "default_key": self.default_key,
            "stats": {
                key: {name: stats.to_dict() for name, stats in features.items()}
                for key, features in self.stats.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "normalization") -> PolicyNormalization:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: Naming ``where`` and what is wrong.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{where}: format_version {data.get('format_version')!r}, expected {_FORMAT_VERSION}"
            )
        stats = data.get("stats")
        if not isinstance(stats, Mapping):
            raise ValueError(f"{where}: 'stats' must be an object of dataset keys")
        parsed: dict[str, dict[str, NormStats]] = {}
        for key, features in stats.items():
            if not isinstance(features, Mapping):
                raise ValueError(f"{where}: stats[{key!r}] must be an object of features")
            try:
                parsed[key] = {name: NormStats.from_dict(v) for name, v in features.items()}
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: stats[{key!r}]: {err}") from err
            for name, value in parsed[key].items():
                if any(not math.isfinite(float(x)) for x in np.asarray(value.mean).ravel()):
                    raise ValueError(
                        f"{where}: stats[{key!r}][{name!r}].mean holds NaN or infinity"
                    )
        try:
            return cls(mode=data.get("mode"), stats=parsed, default_key=data.get("default_key"))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
