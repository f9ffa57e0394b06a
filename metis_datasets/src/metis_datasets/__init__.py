"""METIS datasets: LeRobot v3 storage with the hand contract, weighted mixtures and transforms."""

from metis_datasets.lerobot_format import (
    LeRobotDataset,
    LeRobotWriter,
    UnsupportedDatasetError,
    write_episodes,
)
from metis_datasets.mixture import TABLE6_WEIGHTS, MixtureDataset
from metis_datasets.transforms import SampleSpec, build_sample, center_crop_resize, resample_episode

__all__ = [
    "TABLE6_WEIGHTS",
    "LeRobotDataset",
    "LeRobotWriter",
    "MixtureDataset",
    "SampleSpec",
    "UnsupportedDatasetError",
    "build_sample",
    "center_crop_resize",
    "resample_episode",
    "write_episodes",
]
