import json

import numpy as np
import pytest
import torch

from metis_core.contract import hand_value_mask
from metis_core.normalization import Normalizer, NormMode, NormStats, compute_stats


def test_masked_statistics_equal_numpy_on_the_valid_subset() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1000, 48)) * 0.1 + 0.3
    hand_mask = rng.random((1000, 2)) > 0.3
    valid = hand_value_mask(torch.from_numpy(hand_mask)).numpy()
    values[~valid] = 0.0  # missing hands are zeros; they must not count
    stats = compute_stats(values, valid)
    for dim in (0, 20, 40):
        subset = values[valid[:, dim], dim]
        np.testing.assert_allclose(stats.mean[dim], subset.mean(), rtol=1e-12)
        np.testing.assert_allclose(stats.std[dim], subset.std(), rtol=1e-12)
        np.testing.assert_allclose(stats.min[dim], subset.min())
        np.testing.assert_allclose(stats.q01[dim], np.quantile(subset, 0.01), rtol=1e-12)
        np.testing.assert_allclose(stats.q99[dim], np.quantile(subset, 0.99), rtol=1e-12)
        assert stats.count[dim] == valid[:, dim].sum()


def test_stats_json_and_tensor_round_trips_are_exact() -> None:
    stats = compute_stats(np.random.default_rng(1).normal(size=(50, 4)))
    again = NormStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    for name in ("mean", "std", "min", "max", "q01", "q99", "count"):
        np.testing.assert_array_equal(getattr(again, name), getattr(stats, name))
    from_tensors = NormStats.from_tensors(stats.to_tensors("action"), "action")
    np.testing.assert_array_equal(from_tensors.q99, stats.q99)
    with pytest.raises(ValueError, match=r"lack \['q01', 'q99'\]"):
        NormStats.from_dict({k: v for k, v in stats.to_dict().items() if not k.startswith("q")})


@pytest.mark.parametrize("mode", list(NormMode))
def test_normalize_round_trip(mode: NormMode) -> None:
    values = torch.from_numpy(np.random.default_rng(2).normal(size=(200, 6)) * 3 + 1)
    normalizer = Normalizer(compute_stats(values), mode)
    torch.testing.assert_close(normalizer.unnormalize(normalizer.normalize(values)), values)


def test_modes_map_to_their_ranges() -> None:
    values = torch.linspace(-2, 6, 1001, dtype=torch.float64)[:, None]
    stats = compute_stats(values)
    min_max = Normalizer(stats, "min_max").normalize(values)
    assert float(min_max.min()) == pytest.approx(-1.0)
    assert float(min_max.max()) == pytest.approx(1.0)
    quantile = Normalizer(stats, "q01_q99").normalize(values)
    assert float((quantile.abs() <= 1.0 + 1e-9).double().mean()) == pytest.approx(0.98, abs=0.002)
    standard = Normalizer(stats, "mean_std").normalize(values)
    assert float(standard.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(standard.std(unbiased=False)) == pytest.approx(1.0)


def test_constant_dimension_does_not_divide_by_zero() -> None:
    values = torch.ones(10, 2, dtype=torch.float64)
    out = Normalizer(compute_stats(values), "mean_std").normalize(values)
    assert bool(torch.isfinite(out).all())


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown normalisation mode 'zscore'"):
        NormMode.parse("zscore")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        compute_stats(np.zeros(5))
    values = np.zeros((3, 2))
    values[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_stats(values)
    normalizer = Normalizer(compute_stats(np.zeros((3, 2))), "mean_std")
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        normalizer.normalize(torch.zeros(3, 4))
