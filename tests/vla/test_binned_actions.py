"""The binned-action VLA baseline (``actions_from="motion_tokens"`` with a ``binning`` motion
tokenizer) and the hand presence a policy infers from the state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_vla import episodes, extractor, normalization, tokenizers

from metis_core.contract import LEFT, RIGHT
from metis_core.resample import resample_hand_vectors
from metis_core.vla import MetisPolicy
from metis_core.vla.configuration_metis import MetisConfig
from metis_core.vla.data import dynamics_codes_for_episode, motion_windows_for_episode
from metis_tokenizers.binning import Binning, BinningConfig

WINDOW = 6  # frames of the binned window: every 0.2 s of the upcoming second


def _binning() -> Binning:
    windows, masks = [], []
    for episode in episodes():
        w, m = motion_windows_for_episode(episode, window_len=WINDOW)
        windows.append(w)
        masks.append(m)
    return Binning(BinningConfig(window_len=WINDOW)).fit(torch.cat(windows), torch.cat(masks))


def _binned_policy(seed: int = 0) -> MetisPolicy:
    _, visual = tokenizers()
    torch.manual_seed(seed)
    config = MetisConfig.tiny(motion_tokenizer="binning", actions_from="motion_tokens", action_loss_weight=0.0)  # fmt: skip
    return MetisPolicy(config, motion_tokenizer=_binning(), visual_tokenizer=visual, normalization=normalization()).eval()  # fmt: skip


def test_config_refuses_binned_actions_without_tokens() -> None:
    with pytest.raises(ValueError, match="dynamics_tokens=True"):
        MetisConfig.tiny(actions_from="motion_tokens", dynamics_tokens=False)
    with pytest.raises(ValueError, match="actions_from"):
        MetisConfig.tiny(actions_from="bins")


def test_binned_policy_actions_are_the_decoded_bins_resampled_to_the_chunk() -> None:
    policy = _binned_policy()
    binning = policy.motion_tokenizer
    assert policy.vocabulary.spec.motion_tokens == (WINDOW - 1) * 48
    assert policy.vocabulary.spec.motion_codes == 256
    rng = np.random.default_rng(0)
    episode = episodes()[0]
    worst_at_frames, worst_between = 0.0, 0.0
    for trial in range(6):
        t = int(rng.integers(0, episode.state.shape[0]))
        image = episode.images["ego"][t]
        state = episode.state[t]
        prediction = policy.predict_action(image, episode.instruction, state, reason=False)
        assert prediction.actions.shape == (30, 48)
        assert prediction.motion_codes.shape == ((WINDOW - 1) * 48,)
        assert prediction.motion_codes.max() < 256
        window = binning.decode(torch.as_tensor(prediction.motion_codes)[None], start=torch.as_tensor(state, dtype=torch.float32)[None])[0].numpy()  # fmt: skip
        np.testing.assert_allclose(prediction.motion_window, window, atol=1e-6)
        # chunk step k is at k/30 s; the window's frame j at j/5 s: steps 0, 6, 12, 18, 24 are frames
        at_frames = np.abs(prediction.actions[::6] - window[:5]).max()
        worst_at_frames = max(worst_at_frames, float(at_frames))
        # between frames: the resampling of the window (positions linear, rotations slerp)
        expected = resample_hand_vectors(window.astype(np.float64), np.linspace(0, 1, WINDOW), target_times=np.arange(30) / 30).vectors.numpy()  # fmt: skip
        worst_between = max(worst_between, float(np.abs(prediction.actions - expected).max()))
        # the head's output is not what comes back: a binned policy's chunk starts at the state
        np.testing.assert_allclose(prediction.actions[0], state, atol=1e-5)
        del trial
    assert worst_at_frames < 1e-5
    assert worst_between < 1e-5


def test_binned_codes_annotate_beside_unchanged_visual_codes() -> None:
    """A binning motion tokenizer gets its own windows; the visual codes stay those of 16 frames."""
    motion, visual = tokenizers()
    binning = _binning()
    for episode in episodes()[:2]:
        rvq = dynamics_codes_for_episode(episode, motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=extractor())  # fmt: skip
        binned = dynamics_codes_for_episode(episode, motion_tokenizer=binning, visual_tokenizer=visual, feature_extractor=extractor())  # fmt: skip
        np.testing.assert_array_equal(binned.visual, rvq.visual)
        windows, masks = motion_windows_for_episode(episode, window_len=WINDOW)
        np.testing.assert_array_equal(binned.motion, binning.encode(windows, masks.all(1)).numpy())
        assert binned.motion.shape == (episode.state.shape[0], (WINDOW - 1) * 48)


def test_binned_policy_learns_its_codes() -> None:
    """Trained a few steps on the binned codes, the code accuracy rises well above chance."""
    from metis_core.vla.data import samples_from_episode

    policy = _binned_policy()
    motion, visual = tokenizers()
    samples = []
    for episode in episodes():
        codes = dynamics_codes_for_episode(episode, motion_tokenizer=policy.motion_tokenizer, visual_tokenizer=visual, feature_extractor=extractor())  # fmt: skip
        samples += list(samples_from_episode(episode, chunk_len=30, visual_codes=codes.visual, motion_codes=codes.motion, dataset_key="synthetic"))  # fmt: skip
    del motion
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    policy.train()
    accuracies = []
    for _ in range(40):
        batch = policy.collate([samples[i] for i in rng.choice(len(samples), 8, replace=False)])
        out = policy(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        accuracies.append(out.code_accuracy)
    policy.eval()
    # 256 bins: chance is 0.4 %; neighbouring frames share most bins, so a few steps learn many
    assert np.mean(accuracies[-5:]) > 0.2, accuracies
    assert np.mean(accuracies[-5:]) > 3 * np.mean(accuracies[:3])


def test_missing_hand_is_inferred_from_a_zero_state() -> None:
    """A right-hand-only state (the left 24 values zero) acts like hand_mask = (False, True)."""
    from helpers_vla import tiny_policy

    policy = tiny_policy().eval()
    episode = episodes()[0]
    state = episode.state[5].copy()
    state[list(LEFT.indices)] = 0.0
    image = episode.images["ego"][5]
    implicit = policy.predict_action(image, episode.instruction, state, reason=False)
    explicit = policy.predict_action(image, episode.instruction, state, reason=False, hand_mask=[False, True])  # fmt: skip
    np.testing.assert_array_equal(implicit.actions, explicit.actions)
    assert np.all(implicit.actions[:, list(LEFT.indices)] == 0.0)
    assert np.abs(implicit.actions[:, list(RIGHT.indices)]).max() > 0
    both = policy.predict_action(image, episode.instruction, episode.state[5], reason=False)
    assert np.abs(both.actions[:, list(LEFT.indices)]).max() > 0
