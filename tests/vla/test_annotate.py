"""The offline dynamics-code annotation pass: ``metis annotate`` and the reading of its codes."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_vla import extractor, tokenizer_dirs

import metis_core.vla.annotate as annotate_module
import metis_datasets.annotation as annotation_module
from metis_core.interfaces import Tokenizer
from metis_core.vla.annotate import (
    DYNAMICS_FEATURE,
    AnnotationMismatchError,
    CorruptAnnotationError,
    MissingAnnotationError,
    annotate_dataset,
    read_dynamics_codes,
    tokenizer_fingerprint,
)
from metis_core.vla.annotate_cli import annotate_command
from metis_core.vla.data import dynamics_codes_for_episode
from metis_datasets.annotation import AnnotationConflictError
from metis_datasets.lerobot_format import LeRobotDataset, LeRobotWriter, write_episodes
from metis_datasets.synthetic.source_synthetic import SyntheticConfig, SyntheticSource
from metis_datasets.validation import IncompleteDatasetError, check_dataset

EPISODES = 5  # two episodes per data file: files of 2, 2 and 1 episodes


@functools.cache
def _dirs() -> tuple[Path, Path]:
    """The helpers' tokenizers, the visual run completed with its feature extractor."""
    motion_dir, visual_dir = tokenizer_dirs()
    root = Path(tempfile.mkdtemp(prefix="metis-annotate-tok-"))
    shutil.copytree(visual_dir, root / "visual")
    extractor().save_pretrained(root / "visual" / "feature_extractor")
    return motion_dir, root / "visual"


@functools.cache
def _tokenizers() -> tuple:
    return annotate_module.load_annotation_tokenizers(*_dirs())


@functools.cache
def _base() -> Path:
    root = Path(tempfile.mkdtemp(prefix="metis-annotate-ds-")) / "synthetic"
    config = SyntheticConfig(episodes=EPISODES, frames=40, height=64, width=64, seed=5)
    episodes = list(SyntheticSource(config).iter_episodes())
    write_episodes(root, episodes, fps=30, source="synthetic", embodiment="human_mano", image_shape=(64, 64), episodes_per_file=2, progress=False)  # fmt: skip
    return root


@functools.cache
def _annotated() -> Path:
    """One uninterrupted run, the reference of the others."""
    root = _base().parent / "reference"
    shutil.copytree(_base(), root)
    motion, visual, feats = _tokenizers()
    annotate_dataset(root, motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=feats, progress=False)  # fmt: skip
    return root


def _copy(tmp_path: Path, source: Path | None = None) -> Path:
    target = tmp_path / "dataset"
    shutil.copytree(source or _base(), target)
    return target


def _annotate(root: Path, **kwargs) -> Path:
    motion, visual, feats = _tokenizers()
    kwargs = {"motion_tokenizer": motion, "visual_tokenizer": visual, "feature_extractor": feats, "progress": False, **kwargs}  # fmt: skip
    return annotate_dataset(root, **kwargs)


def _data_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}  # fmt: skip


def _counting(monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> list[int]:
    """Count the episodes each batched code computation gets; optionally fail on the Nth call."""
    calls: list[int] = []
    real = annotate_module.dynamics_codes_for_episodes

    def wrapper(episodes, **kwargs):
        episodes = list(episodes)
        calls.append(len(episodes))
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt("killed")
        return real(episodes, **kwargs)

    monkeypatch.setattr(annotate_module, "dynamics_codes_for_episodes", wrapper)
    return calls


def _perturbed_motion():
    motion = Tokenizer.from_pretrained(_dirs()[0])
    with torch.no_grad():
        next(motion.decoder.parameters()).add_(0.5)  # one decoder weight: the codes are the same
    return motion


def test_stored_codes_equal_per_episode_codes() -> None:
    root = _annotated()
    dataset = LeRobotDataset(root)
    files = {ep["data_file"] for ep in dataset.episodes}
    assert len(files) == 3
    assert len(dataset.episodes) == EPISODES
    motion, visual, feats = _tokenizers()
    codes = read_dynamics_codes(dataset, motion_tokenizer=motion, visual_tokenizer=visual)
    assert codes.shape == (EPISODES * 40, 44)
    assert codes.dtype == np.int64
    for i, record in enumerate(dataset.episodes):
        expected = dynamics_codes_for_episode(dataset.episode(i), motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=feats)  # fmt: skip
        got = codes[record["from"] : record["to"]]
        np.testing.assert_array_equal(got[:, :4], expected.visual)
        np.testing.assert_array_equal(got[:, 4:], expected.motion)
    assert codes[:, :4].max() < visual.vocab_size
    assert codes[:, 4:].max() < motion.vocab_size
    feature = dataset.info["features"][DYNAMICS_FEATURE]
    assert feature["dtype"] == "int64"
    assert feature["shape"] == [44]
    assert feature["names"][:5] == ["visual_0", "visual_1", "visual_2", "visual_3", "motion_0"]
    metadata = feature["metis_annotation"]["metadata"]
    assert metadata["motion_tokenizer"]["fingerprint"] == tokenizer_fingerprint(motion)
    assert metadata["visual_tokenizer"]["fingerprint"] == tokenizer_fingerprint(visual)
    assert metadata["feature_extractor"]["fingerprint"] == feats.fingerprint
    assert (metadata["window_duration_s"], metadata["window_len"], metadata["frame_gap"]) == (1.0, 16, 30)  # fmt: skip
    assert metadata["motion_tokenizer"]["codes"] == 40
    assert metadata["visual_tokenizer"]["codes"] == 4
    assert "metis_core_version" in feature["metis_annotation"]["provenance"]
    # the dataset is still whole: the reader's and check's validation pass, the rest unchanged
    report = check_dataset(root)
    assert report.ok, report.summary()
    assert report.files_hashed >= 3 * 3 + 2
    base = LeRobotDataset(_base())
    np.testing.assert_array_equal(dataset.state, base.state)
    assert not (root / ".metis_annotate").exists()


def test_fingerprint_is_stable_across_save_and_load_and_sees_one_weight(tmp_path: Path) -> None:
    motion = Tokenizer.from_pretrained(_dirs()[0])
    first = tokenizer_fingerprint(motion)
    assert len(first) == 64
    assert first == tokenizer_fingerprint(motion)
    motion.save_pretrained(tmp_path / "copy")
    assert tokenizer_fingerprint(Tokenizer.from_pretrained(tmp_path / "copy")) == first
    assert tokenizer_fingerprint(_perturbed_motion()) != first
    visual = _tokenizers()[1]
    assert tokenizer_fingerprint(visual) not in (first, tokenizer_fingerprint(_perturbed_motion()))


def test_read_refuses_missing_and_mismatched_codes() -> None:
    motion, visual, _ = _tokenizers()
    with pytest.raises(MissingAnnotationError, match="metis annotate .* --motion .* --visual"):
        read_dynamics_codes(_base(), motion_tokenizer=motion, visual_tokenizer=visual)
    with pytest.raises(AnnotationMismatchError, match=r"another motion tokenizer \(stored fingerprint [0-9a-f]{12}\.\.\., configured [0-9a-f]{12}"):  # fmt: skip
        read_dynamics_codes(_annotated(), motion_tokenizer=_perturbed_motion(), visual_tokenizer=visual)  # fmt: skip
    # codes outside a codebook (a forged dataset object: the real file is checksummed)
    dataset = LeRobotDataset(_annotated())
    codes = dataset.columns[DYNAMICS_FEATURE].copy()
    codes[45, 2] = visual.vocab_size
    fake = SimpleNamespace(root="fake", info=dataset.info, columns={DYNAMICS_FEATURE: codes}, num_frames=dataset.num_frames, frame_episode=dataset.frame_episode)  # fmt: skip
    with pytest.raises(CorruptAnnotationError, match=r"1 visual code\(s\) outside \[0, 16\) \(first at frame 45, episode 1"):  # fmt: skip
        read_dynamics_codes(fake, motion_tokenizer=motion, visual_tokenizer=visual)


def test_killed_run_resumes_and_computes_only_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = _copy(tmp_path)
    calls = _counting(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _annotate(root)
    assert calls == [2, 2]
    staged = sorted(p.relative_to(root).as_posix() for p in (root / ".metis_annotate").rglob("*.parquet"))  # fmt: skip
    assert staged == [".metis_annotate/data/chunk-000/file-000.parquet"]
    assert DYNAMICS_FEATURE not in LeRobotDataset(root).columns  # the dataset is untouched
    assert check_dataset(root).ok
    calls = _counting(monkeypatch)  # no failure this time
    report: dict = {}
    _annotate(root, report=report)
    assert calls == [2, 1]  # files 1 and 2 only
    assert (report["frames"], report["frames_computed"], report["episodes_computed"]) == (200, 120, 3)  # fmt: skip
    assert _data_bytes(root) == _data_bytes(_annotated())
    assert (root / "meta" / "info.json").read_bytes() == (_annotated() / "meta" / "info.json").read_bytes()  # fmt: skip
    assert not (root / ".metis_annotate").exists()


def test_staged_files_of_another_plan_are_discarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = _copy(tmp_path)
    _counting(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        _annotate(root, motion_tokenizer=_perturbed_motion())
    calls = _counting(monkeypatch)
    _annotate(root)
    assert calls == [2, 2, 1]  # another motion tokenizer: nothing staged is reused
    assert _data_bytes(root) == _data_bytes(_annotated())


def test_killed_commit_is_refused_then_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = _copy(tmp_path)
    real = annotation_module.write_json

    def dies_on_info(path, data):
        if Path(path).name == "info.json":
            raise KeyboardInterrupt("killed while committing")
        real(path, data)

    monkeypatch.setattr(annotation_module, "write_json", dies_on_info)
    with pytest.raises(KeyboardInterrupt):
        _annotate(root)
    monkeypatch.setattr(annotation_module, "write_json", real)
    assert (root / ".metis_annotate" / "commit.json").exists()
    assert _data_bytes(root) == _data_bytes(_annotated())  # data replaced, info.json not yet
    with pytest.raises(IncompleteDatasetError, match=r"interrupted while committing.*Re-run the same `metis annotate"):  # fmt: skip
        LeRobotDataset(root)
    report = check_dataset(root)
    assert not report.ok
    assert any("metis annotate" in p.message for p in report.problems)
    calls = _counting(monkeypatch)
    _annotate(root)
    assert calls == []  # the commit is finished from the journal, nothing recomputed
    assert (root / "meta" / "info.json").read_bytes() == (_annotated() / "meta" / "info.json").read_bytes()  # fmt: skip
    assert check_dataset(root).ok


def test_annotated_dataset_is_a_no_op_conflict_or_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = _copy(tmp_path, _annotated())
    info_before = (root / "meta" / "info.json").read_bytes()
    calls = _counting(monkeypatch)
    report: dict = {}
    _annotate(root, report=report)
    assert calls == []
    assert report["frames_computed"] == 0
    assert (root / "meta" / "info.json").read_bytes() == info_before
    perturbed = _perturbed_motion()
    with pytest.raises(AnnotationConflictError, match=r"motion_tokenizer\.fingerprint: stored '[0-9a-f]+.*asked.*overwrite"):  # fmt: skip
        _annotate(root, motion_tokenizer=perturbed)
    assert (root / "meta" / "info.json").read_bytes() == info_before
    _annotate(root, motion_tokenizer=perturbed, overwrite=True)
    assert calls == [2, 2, 1]
    dataset = LeRobotDataset(root)
    visual = _tokenizers()[1]
    codes = read_dynamics_codes(dataset, motion_tokenizer=perturbed, visual_tokenizer=visual)
    np.testing.assert_array_equal(codes, LeRobotDataset(_annotated()).columns[DYNAMICS_FEATURE])
    assert dataset.info["features"][DYNAMICS_FEATURE]["metis_annotation"]["metadata"]["motion_tokenizer"]["fingerprint"] == tokenizer_fingerprint(perturbed)  # fmt: skip
    assert list(dataset.info["features"]).count(DYNAMICS_FEATURE) == 1
    assert check_dataset(root).ok


def test_cli_annotates_and_reports(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    motion_dir, visual_dir = _dirs()
    args = [str(root), "--motion", str(motion_dir), "--visual", str(visual_dir), "--threads", "1", "--no-progress", "--batch-size", "32"]  # fmt: skip
    result = CliRunner().invoke(annotate_command, args)
    assert result.exit_code == 0, result.output
    assert "annotated 200 frames (5 episodes; 200 in the dataset)" in result.output
    assert "frames/s" in result.output
    np.testing.assert_array_equal(LeRobotDataset(root).columns[DYNAMICS_FEATURE], LeRobotDataset(_annotated()).columns[DYNAMICS_FEATURE])  # fmt: skip
    again = CliRunner().invoke(annotate_command, args)
    assert again.exit_code == 0
    assert "no frames to compute: it holds the dynamics codes" in again.output


def test_workers_decode_in_processes(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _annotate(root, workers=2, batch_size=16)
    np.testing.assert_array_equal(LeRobotDataset(root).columns[DYNAMICS_FEATURE], LeRobotDataset(_annotated()).columns[DYNAMICS_FEATURE])  # fmt: skip


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    motion_dir, visual_dir = _dirs()
    runner = CliRunner()
    result = runner.invoke(annotate_command, [str(_base()), "--motion", str(tmp_path / "nope"), "--visual", str(visual_dir), "--threads", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert f"--motion {tmp_path / 'nope'}: no such directory" in result.output
    result = runner.invoke(annotate_command, [str(tmp_path / "missing"), "--motion", str(motion_dir), "--visual", str(visual_dir), "--threads", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert "no such directory" in result.output
    bare = tmp_path / "bare_visual"
    shutil.copytree(tokenizer_dirs()[1], bare)
    result = runner.invoke(annotate_command, [str(_base()), "--motion", str(motion_dir), "--visual", str(bare), "--threads", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert "feature_extractor is missing" in result.output
    result = runner.invoke(annotate_command, [str(_base()), "--motion", str(visual_dir), "--visual", str(visual_dir), "--threads", "1"])  # fmt: skip
    assert result.exit_code == 1
    assert "expected a fixed-length motion tokenizer" in result.output
    # an unfinished conversion is refused, and nothing is written into it
    config = SyntheticConfig(episodes=1, frames=40, height=64, width=64, seed=1)
    writer = LeRobotWriter(tmp_path / "partial", fps=30, source="synthetic", embodiment="human_mano", image_shape=(64, 64))  # fmt: skip
    writer.add_episode(next(iter(SyntheticSource(config).iter_episodes())))
    writer.flush()
    with pytest.raises(IncompleteDatasetError, match="incomplete METIS dataset"):
        _annotate(tmp_path / "partial")
    assert not (tmp_path / "partial" / ".metis_annotate").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a LeRobot dataset"):
        _annotate(tmp_path / "empty")


def test_appending_episodes_to_an_annotated_dataset_is_refused(tmp_path: Path) -> None:
    from metis_datasets.lerobot_format import UnsupportedDatasetError

    root = _copy(tmp_path, _annotated())
    before = _data_bytes(root)
    with pytest.raises(UnsupportedDatasetError, match=r"dynamics\.codes.*without values"):
        LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", image_shape=(64, 64))  # fmt: skip
    assert _data_bytes(root) == before  # nothing touched
    LeRobotWriter(_copy(tmp_path / "plain"), fps=30, source="synthetic", embodiment="human_mano", image_shape=(64, 64))  # fmt: skip


def test_visual_codes_from_a_sibling_equal_a_full_annotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A second motion tokenizer (the binned-action baseline's) annotates a copy: the visual codes
    are read from the annotated original (no patch features computed) and every code equals a
    full annotation's; a sibling with other visual settings or other episodes is refused."""
    from metis_core.vla.data import motion_windows_for_episode
    from metis_tokenizers.binning import Binning, BinningConfig

    _, visual, feats = _tokenizers()
    episodes = [LeRobotDataset(_base()).episode(i, with_images=False) for i in range(EPISODES)]
    windows = [motion_windows_for_episode(e, window_len=5) for e in episodes]
    binning = Binning(BinningConfig(window_len=5)).fit(torch.cat([w for w, _ in windows]), torch.cat([m for _, m in windows]))  # fmt: skip
    full = _copy(tmp_path / "full")
    annotate_dataset(full, motion_tokenizer=binning, visual_tokenizer=visual, feature_extractor=feats, progress=False)  # fmt: skip
    cheap = _copy(tmp_path / "cheap")
    reference = _annotated()
    calls = {"extract": 0}
    original = type(feats).extract

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["extract"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(feats), "extract", counting)
    annotate_dataset(cheap, motion_tokenizer=binning, visual_tokenizer=visual, feature_extractor=feats, progress=False, visual_codes_from=reference)  # fmt: skip
    assert calls["extract"] == 0
    expected = read_dynamics_codes(LeRobotDataset(full), motion_tokenizer=binning, visual_tokenizer=visual)  # fmt: skip
    got = read_dynamics_codes(LeRobotDataset(cheap), motion_tokenizer=binning, visual_tokenizer=visual)  # fmt: skip
    assert got.shape == (EPISODES * 40, 4 + 4 * 48)
    np.testing.assert_array_equal(got, expected)
    other = _copy(tmp_path / "other_episodes", source=None)
    shorter = tmp_path / "short"
    config = SyntheticConfig(episodes=EPISODES, frames=30, height=64, width=64, seed=5)
    write_episodes(shorter, list(SyntheticSource(config).iter_episodes()), fps=30, source="synthetic", embodiment="human_mano", image_shape=(64, 64), progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="are not those of"):
        annotate_dataset(shorter, motion_tokenizer=binning, visual_tokenizer=visual, feature_extractor=feats, progress=False, visual_codes_from=_annotated())  # fmt: skip
    with pytest.raises(MissingAnnotationError, match="no dynamics codes"):
        annotate_dataset(other, motion_tokenizer=binning, visual_tokenizer=visual, feature_extractor=feats, progress=False, visual_codes_from=_base())  # fmt: skip
