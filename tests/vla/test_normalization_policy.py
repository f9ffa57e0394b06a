"""Normalisation statistics that travel with a policy: exact round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metis_core.normalization import NormStats, compute_stats
from metis_core.vla import PolicyNormalization


def _stats(seed: int, constant_dims: tuple[int, ...] = ()) -> NormStats:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (500, 48)) * rng.uniform(0.01, 2, 48) + rng.normal(0, 1, 48)
    for d in constant_dims:
        values[:, d] = 0.25
    return compute_stats(values)


def _norm(mode: str, keys=("a",), constant_dims=(3, 40)) -> PolicyNormalization:
    stats = {k: {"observation.state": _stats(i, constant_dims), "action": _stats(10 + i, constant_dims)} for i, k in enumerate(keys)}  # fmt: skip
    return PolicyNormalization(mode=mode, stats=stats)


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "q01_q99", "identity"])
def test_normalize_then_unnormalize_is_the_identity(mode: str) -> None:
    norm = _norm(mode)
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(0, 3, (300, 30, 48)))
    masks = torch.as_tensor(rng.random((300, 2)) > 0.3)
    masked = torch.where(_value_mask(masks)[:, None], x, torch.zeros_like(x))
    for feature in ("observation.state", "action"):
        y = norm.normalize(masked, feature, hand_mask=masks[:, None, :].expand(-1, 30, -1))
        back = norm.unnormalize(y, feature, hand_mask=masks[:, None, :].expand(-1, 30, -1))
        assert float((back - masked).abs().max()) < 1e-6
        assert bool(torch.isfinite(y).all())
        # a missing hand's values are exactly zero after normalising (not -mean/std)
        missing = ~_value_mask(masks)[:, None].expand_as(y)
        assert float(y[missing].abs().max()) == 0.0
    if mode != "identity":
        y = norm.normalize(masked, "action")
        assert not torch.equal(y, masked), "a non-identity mode must change the values"


def _value_mask(masks: torch.Tensor) -> torch.Tensor:
    from metis_core.contract import hand_value_mask

    return hand_value_mask(masks)


def test_zero_range_dimensions_do_not_divide_by_zero() -> None:
    norm = _norm("min_max", constant_dims=(3, 40))
    x = torch.full((5, 48), 0.25, dtype=torch.float64)
    y = norm.normalize(x, "action")
    assert float(y[:, [3, 40]].abs().max()) == 0.0
    assert bool(torch.isfinite(y).all())


def test_missing_or_ambiguous_keys_list_the_choices() -> None:
    two = _norm("q01_q99", keys=("real_g1", "sim"))
    with pytest.raises(KeyError, match=r"several datasets \['real_g1', 'sim'\]"):
        two.normalize(torch.zeros(48), "action")
    with pytest.raises(KeyError, match=r"choose one of \['real_g1', 'sim'\]"):
        two.normalize(torch.zeros(48), "action", key="bridge")
    assert torch.equal(
        two.normalize(torch.ones(48), "action", key="sim"),
        two.normalize(torch.ones(48), "action", key="sim"),
    )
    empty = PolicyNormalization(mode="q01_q99")
    with pytest.raises(KeyError, match="holds no statistics"):
        empty.normalize(torch.zeros(48), "action")


def test_bad_statistics_are_refused() -> None:
    stats = _stats(0)
    bad = NormStats(**{**stats.__dict__, "std": -np.abs(stats.std)})
    with pytest.raises(ValueError, match="negative std"):
        PolicyNormalization(
            mode="mean_std", stats={"a": {"observation.state": bad, "action": stats}}
        )
    nan = NormStats(**{**stats.__dict__, "q99": np.full(48, np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        PolicyNormalization(
            mode="q01_q99", stats={"a": {"observation.state": stats, "action": nan}}
        )
    with pytest.raises(ValueError, match="lack \\['action'\\]"):
        PolicyNormalization(mode="q01_q99", stats={"a": {"observation.state": stats}})
    short = compute_stats(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="7 values, expected the 48"):
        PolicyNormalization(
            mode="q01_q99", stats={"a": {"observation.state": short, "action": stats}}
        )
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        PolicyNormalization(mode="bounds")


def test_json_round_trip_and_malformed_files() -> None:
    norm = _norm("q01_q99", keys=("a", "b"))
    again = PolicyNormalization.from_dict(norm.to_dict())
    x = torch.randn(4, 48, dtype=torch.float64)
    assert torch.equal(again.normalize(x, "action", key="b"), norm.normalize(x, "action", key="b"))
    data = norm.to_dict()
    data["stats"]["a"]["action"].pop("mean")
    with pytest.raises(ValueError, match=r"stats\['a'\].*mean"):
        PolicyNormalization.from_dict(data, where="ckpt/normalization.json")
    with pytest.raises(ValueError, match="format_version"):
        PolicyNormalization.from_dict({"stats": {}})
    with pytest.raises(ValueError, match="JSON object"):
        PolicyNormalization.from_dict(None)
