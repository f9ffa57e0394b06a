"""METIS datasets: LeRobot v3 storage with the hand contract, weighted mixtures and transforms."""

from metis_datasets.lerobot_format import (
    LeRobotDataset,
    LeRobotWriter,
    UnsupportedDatasetError,
    write_episodes,
)
from metis_datasets.mixture import TABLE6_WEIGHTS, MixtureDataset
from metis_datasets.transforms import SampleSpec, build_sample, center_crop_resize, resample_episode
from metis_datasets.validation import (
    CheckReport,
    IncompleteDatasetError,
    InvalidDatasetError,
    Problem,
    check_dataset,
)

__all__ = [
    "TABLE6_WEIGHTS",
    "CheckReport",
    "IncompleteDatasetError",
    "InvalidDatasetError",
    "LeRobotDataset",
    "LeRobotWriter",
    "MixtureDataset",
    "Problem",
    "SampleSpec",
    "UnsupportedDatasetError",
    "build_sample",
    "center_crop_resize",
    "check_dataset",
    "resample_episode",
    "write_episodes",
]
