"""The METIS policy end to end at tiny scale: training, inference, reasoning, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import helpers_vla as h
import numpy as np
import pytest
import torch

from metis_core.errors import ContractMismatchError
from metis_core.io import CorruptFileError
from metis_core.vla import MetisPolicy, TrainingSample

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trained() -> tuple[MetisPolicy, list[float]]:
    torch.set_num_threads(1)
    policy = h.tiny_policy(seed=0)
    losses = h.train(policy, 50)
    return policy, losses


def _obs(index: int = 0, frame: int = 0):
    episode = h.episodes()[index]
    return episode.images["ego"][frame], episode.instruction, episode.state[frame]


def test_tiny_policy_trains_50_steps_with_decreasing_loss(trained) -> None:
    _, losses = trained
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert len(losses) == 50
    assert last < 0.75 * first, f"loss went from {first:.3f} to {last:.3f}"
    # not one lucky batch: the last ten are all below the first five's mean
    assert max(losses[-10:]) < first


def test_predict_action_returns_a_float32_chunk_and_reload_gives_identical_actions(
    trained, tmp_path: Path
) -> None:
    policy, _ = trained
    image, instruction, state = _obs()
    first = policy.predict_action(image, instruction, state)
    assert first.actions.shape == (30, 48)
    assert first.actions.dtype == np.float32
    assert np.isfinite(first.actions).all()
    assert first.visual_codes.shape == (4,)
    assert first.motion_codes.shape == (40,)
    assert first.motion_window is not None
    assert first.motion_window.shape == (16, 48)
    for stage in ("preprocess", "vision", "prefill", "decode", "action_head", "total"):
        assert first.timings[stage] >= 0
    policy.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors", "motion_tokenizer", "normalization.json", "tokenizer", "visual_tokenizer"]  # fmt: skip
    loaded = MetisPolicy.from_pretrained(tmp_path / "ckpt")
    for frame in (0, 10, 20):
        image, instruction, state = _obs(1, frame)
        a = policy.predict_action(image, instruction, state)
        b = loaded.predict_action(image, instruction, state)
        assert np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.motion_codes, b.motion_codes)
    assert loaded.normalization.to_dict() == policy.normalization.to_dict()


def test_checkpoint_errors_name_the_problem(trained, tmp_path: Path) -> None:
    policy, _ = trained
    policy.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        MetisPolicy.from_pretrained(tmp_path / "nope")
    config = tmp_path / "ckpt" / "config.json"
    data = json.loads(config.read_text())
    data["_metis"]["contract"]["version"] = 7
    config.write_text(json.dumps(data))
    with pytest.raises(ContractMismatchError):
        MetisPolicy.from_pretrained(tmp_path / "ckpt")
    data["_metis"]["contract"]["version"] = 1
    config.write_text(json.dumps(data))
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = "action_head.proj.0.weight"
    tensors.pop(dropped)
    tensors["action_head.extra"] = torch.zeros(1)
    save_file(tensors, str(weights))
    with pytest.raises(CorruptFileError, match=r"missing \['action_head.proj.0.weight'\].*unexpected \['action_head.extra'\]"):  # fmt: skip
        MetisPolicy.from_pretrained(tmp_path / "ckpt")


def test_large_checkpoints_are_sharded_and_load_back(monkeypatch, tmp_path: Path) -> None:
    import metis_core.vla.modeling_metis as modeling

    policy = h.tiny_policy(seed=1)
    monkeypatch.setattr(modeling, "_MAX_SHARD", "400KB")
    policy.save_pretrained(tmp_path / "ckpt")
    shards = sorted(p.name for p in (tmp_path / "ckpt").glob("model-*.safetensors"))
    assert len(shards) >= 2
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").is_file()
    loaded = MetisPolicy.from_pretrained(tmp_path / "ckpt")
    for key, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_the_image_is_used_and_the_towers_run_once_per_call(trained) -> None:
    policy, _ = trained
    _, instruction, state = _obs()
    calls = {"dino": 0, "siglip": 0}
    hooks = [
        getattr(policy.backbone, name).register_forward_hook(
            lambda *a, n=name: calls.__setitem__(n, calls[n] + 1)
        )
        for name in calls
    ]
    try:
        black = np.zeros((64, 64, 3), np.uint8)
        white = np.full((64, 64, 3), 255, np.uint8)
        a = policy.predict_action(black, instruction, state)
        assert calls == {"dino": 1, "siglip": 1}
        b = policy.predict_action(white, instruction, state, use_cache=False)
        assert calls == {"dino": 2, "siglip": 2}
    finally:
        for hook in hooks:
            hook.remove()
    assert float(np.abs(a.actions - b.actions).max()) > 1e-3


def test_kv_cache_on_and_off_and_batching_give_the_same_chunks(trained) -> None:
    policy, _ = trained
    episode = h.episodes()[2]
    frames = [0, 7, 19]
    images = episode.images["ego"][frames]
    states = episode.state[frames]
    batched = policy.predict_action(images, episode.instruction, states)
    no_cache = policy.predict_action(images, episode.instruction, states, use_cache=False)
    assert batched.actions.shape == (3, 30, 48)
    assert np.array_equal(batched.motion_codes, no_cache.motion_codes)
    assert float(np.abs(batched.actions - no_cache.actions).max()) < 1e-4
    for row, frame in enumerate(frames):
        single = policy.predict_action(episode.images["ego"][frame], episode.instruction, episode.state[frame])  # fmt: skip
        assert np.array_equal(single.motion_codes, batched.motion_codes[row])
        assert float(np.abs(single.actions - batched.actions[row]).max()) < 1e-4
    # different prompt lengths in one batch (left padding): one row remembers a long subtask
    subtasks = [None, "grasp the object with the right hand now", None]
    mixed = policy.predict_action(images, episode.instruction, states, subtask=subtasks)
    for row, frame in enumerate(frames):
        single = policy.predict_action(episode.images["ego"][frame], episode.instruction, episode.state[frame], subtask=subtasks[row])  # fmt: skip
        assert np.array_equal(single.motion_codes, mixed.motion_codes[row])
        assert float(np.abs(single.actions - mixed.actions[row]).max()) < 1e-4


@pytest.mark.parametrize("reason", [None, True, False])
def test_the_decoder_sees_the_same_hidden_states_in_training_and_generation(
    trained, reason
) -> None:
    policy, _ = trained
    episode = h.episodes()[3]
    worst = 0.0
    for frame in (0, 12, 30):
        image, state = episode.images["ego"][frame], episode.state[frame]
        generated = policy.predict_action(image, episode.instruction, state, reason=reason, subtask="open the hand")  # fmt: skip
        sample = TrainingSample(
            image=image,
            instruction=episode.instruction,
            state=state,
            actions=np.zeros((30, 48), np.float32),
            action_valid=np.ones(30, bool),
            # the hands the state holds (a hand whose 24 values are zero is missing)
            hand_mask=np.repeat(episode.hand_mask[frame][None], 30, 0),
            visual_codes=generated.visual_codes,
            motion_codes=generated.motion_codes,
            subtask=generated.subtask,
            previous_subtask="open the hand",
            dataset_key="synthetic",
        )
        with torch.no_grad():
            out = policy(policy.collate([sample]))
        teacher = policy.normalization.unnormalize(out.actions.double(), "action", key="synthetic", hand_mask=torch.as_tensor(episode.hand_mask[frame]))  # fmt: skip
        worst = max(worst, float((teacher[0].float().numpy() - generated.actions).__abs__().max()))
        if reason:
            assert generated.reasoned
            assert generated.subtask
    assert worst < 1e-4, f"teacher forcing and generation disagree by {worst:.3g}"


def test_prompt_is_a_strict_prefix_of_the_training_sequence() -> None:
    policy = h.tiny_policy(seed=2)
    samples = h.annotated_samples()
    reasoning = [s for s in samples if s.subtask is not None][:3]
    acting = [s for s in samples if s.subtask is None][:3]
    assert reasoning
    assert acting
    batch = policy.collate(reasoning + acting)
    v = policy.vocabulary
    for row, sample in enumerate(reasoning + acting):
        prompt = policy.prompt_ids(sample.instruction, sample.previous_subtask)
        n = prompt.shape[0]
        assert torch.equal(batch.input_ids[row, :n], prompt)
        assert bool((batch.labels[row, :n] == -100).all())
        first_target = int(batch.input_ids[row, n])
        expected = v.begin_reasoning_id if sample.subtask is not None else v.begin_dynamics_id
        assert first_target == expected
        assert int(batch.labels[row, n]) == expected


def test_session_remembers_the_subtask_and_shows_it_in_the_prompt(trained) -> None:
    policy, _ = trained
    session = policy.new_session()
    image, instruction, state = _obs(0, 0)
    first = session.predict_action(image, instruction, state, reason=True)
    assert first.reasoned
    assert first.subtask
    assert session.subtask == first.subtask
    seen = []
    original = policy.prompt_ids

    def spy(instruction, subtask=None, *, reason=None):
        seen.append(subtask)
        return original(instruction, subtask, reason=reason)

    policy.prompt_ids = spy
    try:
        second = session.predict_action(image, instruction, state, reason=False)
    finally:
        del policy.prompt_ids
    assert seen == [first.subtask]
    assert not second.reasoned
    assert second.subtask is None
    assert session.subtask == first.subtask  # acting keeps the remembered subtask
    session.reset()
    assert session.subtask is None


def test_joint_commands_through_the_embodiment_ik(trained) -> None:
    policy, _ = trained
    image, instruction, state = _obs()
    result = policy.predict_action(image, instruction, state, embodiment="inspire")
    assert set(result.joints) == {"left", "right"}
    from metis_core.registry import EMBODIMENTS

    for side, joints in result.joints.items():
        hand = EMBODIMENTS.create("inspire", side=side)
        assert joints.shape == (30, hand.num_joints)
        limits = hand.joint_limits.numpy()
        assert (joints >= limits[:, 0] - 1e-5).all()
        assert (joints <= limits[:, 1] + 1e-5).all()
    assert result.timings["ik"] > 0
    # a missing hand gets no commands
    mask = np.array([False, True])
    only_right = policy.predict_action(
        image, instruction, state, embodiment="inspire", hand_mask=mask
    )
    assert set(only_right.joints) == {"right"}
    assert np.abs(only_right.actions[:, :9]).max() == 0
    assert np.abs(only_right.actions[:, 18:33]).max() == 0


def test_token_limit_raises_instead_of_guessing(trained) -> None:
    policy, _ = trained
    image, instruction, _state = _obs()
    pixels = policy.backbone.preprocess(torch.from_numpy(image[None]))
    with pytest.raises(RuntimeError, match="hit the limit of 10 new tokens"):
        policy.generate(pixels, [policy.prompt_ids(instruction)], max_new_tokens=10)


def test_bad_inputs_raise_clear_errors(trained) -> None:
    policy, _ = trained
    image, instruction, state = _obs()
    with pytest.raises(ValueError, match="uint8"):
        policy.predict_action(image.astype(np.float32), instruction, state)
    with pytest.raises(ValueError, match=r"state: expected \(48,\)"):
        policy.predict_action(image, instruction, state[:40])
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_action(image, instruction, np.full(48, np.nan))
    with pytest.raises(ValueError, match="instruction"):
        policy.predict_action(image, "  ", state)
    with pytest.raises(ValueError, match="hand_mask"):
        policy.predict_action(image, instruction, state, hand_mask=[True, False, True])
    with pytest.raises(KeyError, match="choose one of \\['synthetic'\\]"):
        policy.predict_action(image, instruction, state, unnorm_key="real_g1")
    sample = h.annotated_samples()[0]
    with pytest.raises(ValueError, match="chunk of 12"):
        policy.collate([TrainingSample(**{**sample.__dict__, "actions": sample.actions[:12], "action_valid": sample.action_valid[:12], "hand_mask": sample.hand_mask[:12]})])  # fmt: skip


def test_l1_is_masked_by_hand_presence_and_padding() -> None:
    policy = h.tiny_policy(seed=3)
    sample = next(s for s in h.annotated_samples() if s.subtask is None)
    base = policy.collate([sample])
    with torch.no_grad():
        out = policy(base)
    # perturbing targets of a missing hand or of padding rows does not change the action loss
    hand_mask = np.ones((30, 2), bool)
    hand_mask[:, 0] = False
    valid = np.ones(30, bool)
    valid[20:] = False
    masked = TrainingSample(**{**sample.__dict__, "hand_mask": hand_mask, "action_valid": valid})
    batch = policy.collate([masked])
    with torch.no_grad():
        ref = policy(batch).action_loss
        batch.actions[:, :, 0:9] += 5.0  # left wrist: hand missing
        batch.actions[:, 20:, :] += 5.0  # padding rows
        moved = policy(batch).action_loss
        assert float(ref) == pytest.approx(float(moved), abs=1e-7)
        batch.actions[:, :20, 9:12] += 5.0  # present right wrist inside the chunk
        assert float(policy(batch).action_loss) > float(ref) + 0.1
    assert float(out.action_loss) > 0
    # a reasoning-only sample trains tokens but no actions
    reason_only = TrainingSample(**{**sample.__dict__, "visual_codes": None, "motion_codes": None, "subtask": "lift it"})  # fmt: skip
    with torch.no_grad():
        out = policy(policy.collate([reason_only]))
    assert float(out.action_loss) == 0.0
    assert float(out.token_loss) > 0


def test_session_warm_starts_the_ik_from_the_last_solution(trained) -> None:
    policy, _ = trained
    image, instruction, state = _obs()
    session = policy.new_session(embodiment="inspire", replan_every=5)
    first = session.predict_action(image, instruction, state)
    assert set(session.joints) == {"left", "right"}
    warm = session._warm_start()
    for side in ("left", "right"):
        solution = torch.as_tensor(first.joints[side])
        assert torch.equal(warm[side][:25], solution[5:])
        assert torch.equal(warm[side][25:], solution[-1:].expand(5, -1))
    seen = {}
    original = policy.joint_commands

    def spy(actions, hand_mask, *, embodiment, initial=None):
        seen["initial"] = initial
        return original(actions, hand_mask, embodiment=embodiment, initial=initial)

    policy.joint_commands = spy
    try:
        session.predict_action(image, instruction, state)
    finally:
        del policy.joint_commands
    assert torch.equal(seen["initial"]["right"], warm["right"])
    with pytest.raises(ValueError, match="replan_every"):
        policy.new_session(replan_every=0)
