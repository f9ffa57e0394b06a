"""Procedurally generated egocentric two-hand episodes (registry name ``synthetic``).

Quick use::

    from metis_datasets.synthetic import make_dataset
    root = make_dataset("/tmp/synth", episodes=4, seed=0)   # a LeRobot v3 dataset
"""

from metis_datasets.synthetic.source_synthetic import (
    D435_COLOR_INTRINSICS_640X480,
    SyntheticConfig,
    SyntheticSource,
    make_dataset,
)

__all__ = ["D435_COLOR_INTRINSICS_640X480", "SyntheticConfig", "SyntheticSource", "make_dataset"]
