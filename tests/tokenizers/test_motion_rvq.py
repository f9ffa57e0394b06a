"""The residual-VQ motion tokenizer: reconstruction, exact decoding, save/load, errors."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_tokenizers import small_config, trained

from metis_core.contract import LEFT, RIGHT
from metis_core.errors import ComponentConfigError
from metis_core.registry import TOKENIZERS
from metis_tokenizers import MotionRVQ, MotionRVQConfig, generate_motion_windows
from metis_tokenizers._common import from_relative
from metis_tokenizers.evaluation import reconstruction_errors
from metis_tokenizers.training import TrainConfig, train_motion_rvq


@pytest.fixture(scope="module")
def heldout():
    return generate_motion_windows(256, seed=1, split="heldout")


def test_default_config_gives_40_tokens_from_512_codes() -> None:
    tokenizer = TOKENIZERS.create("motion_rvq")
    assert tokenizer.tokens_per_window == 40
    assert tokenizer.vocab_size == 512
    assert tokenizer.codes_shape == (2, 10, 2)
    assert tokenizer.quantizer.shared_codebook
    assert MotionRVQConfig(hands=("right",), num_levels=4).tokens_per_window == 40


def test_short_training_reconstructs_heldout_windows(heldout) -> None:
    tokenizer = trained()
    codes = tokenizer.encode(heldout.actions, heldout.hand_mask)
    assert codes.shape == (256, 40)
    assert codes.dtype == torch.int64
    decoded = tokenizer.decode(codes, heldout.actions[:, 0])
    errors = reconstruction_errors(heldout.actions, decoded, heldout.hand_mask)
    # Holding the start pose for the whole window ("no motion") is the trivial baseline.
    still = heldout.actions[:, :1].expand_as(heldout.actions)
    baseline = reconstruction_errors(heldout.actions, still, heldout.hand_mask)
    # 150 steps of a small model learn the fingers first (the wrists need the longer runs of
    # benchmarks/tokenizers.py, about 12 mm / 1.7 degrees after 15 minutes at full size); that
    # the wrist is coded at all is tested by test_training_codes_the_wrist_motion.
    assert errors["fingertip_mm"] < 7.0
    assert errors["fingertip_mm"] < 0.4 * baseline["fingertip_mm"]
    assert errors["nmse"] < 0.6 * baseline["nmse"]
    # Frame 0 is the start state itself: no token is spent on where the hands are.
    assert torch.allclose(decoded[:, 0], heldout.actions[:, 0], atol=1e-5)


def test_training_codes_the_wrist_motion(tmp_path) -> None:
    """The wrist is coded for real: on windows it has trained on, the decoded wrist trajectory
    is far closer than holding the start pose (measured 0.54× / 0.51× for position / rotation;
    a tokenizer that codes no wrist motion stays at 1.0×)."""
    windows = generate_motion_windows(64, seed=1)
    torch.manual_seed(0)
    result = train_motion_rvq(
        windows,
        tmp_path / "wrist",
        model_config=small_config(codebook_size=64),
        train_config=TrainConfig(
            steps=200, batch_size=64, learning_rate=3e-3, log_every=50, checkpoint_every=0
        ),
        progress=False,
    )
    tokenizer = result.tokenizer
    decoded = tokenizer.decode(tokenizer.encode(windows.actions), windows.actions[:, 0])
    errors = reconstruction_errors(windows.actions, decoded, windows.hand_mask)
    still = windows.actions[:, :1].expand_as(windows.actions)
    baseline = reconstruction_errors(windows.actions, still, windows.hand_mask)
    assert errors["wrist_position_mm"] < 0.7 * baseline["wrist_position_mm"]
    assert errors["wrist_rotation_deg"] < 0.7 * baseline["wrist_rotation_deg"]
    # not only on average: the typical moving window's wrist is coded, not left at its start
    per_window = (decoded - windows.actions)[..., RIGHT.wrist_position].norm(dim=-1).mean(1)
    held = (still - windows.actions)[..., RIGHT.wrist_position].norm(dim=-1).mean(1)
    moving = windows.hand_mask[:, 1] & (held > 0.02)
    assert int(moving.sum()) > 10
    assert float((per_window[moving] / held[moving]).median()) < 0.8


def test_tokens_do_not_depend_on_where_the_hands_are(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:16].clone()
    moved = actions.clone()
    for layout in (LEFT, RIGHT):
        moved[..., layout.wrist_position] += torch.tensor([0.3, -0.1, 0.2])
    assert torch.equal(tokenizer.encode(actions), tokenizer.encode(moved))


def test_decode_from_codes_is_exact_in_eval_mode(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:32]
    with torch.no_grad():
        output = tokenizer.reconstruct(actions)
        through_network = from_relative(
            tokenizer.features_from_network(output.reconstruction), actions[:, 0]
        )
    codes = tokenizer.encode(actions)
    assert torch.equal(output.codes.reshape(32, -1), codes)
    decoded = tokenizer.decode(codes, actions[:, 0])
    assert torch.allclose(decoded, through_network, atol=1e-6)
    assert torch.equal(decoded, tokenizer.decode(codes, actions[:, 0]))


def test_save_load_keeps_normalisation_contract_and_codes(heldout, tmp_path) -> None:
    tokenizer = trained()
    tokenizer.save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert saved["type"] == "motion_rvq"
    assert saved["_metis"]["contract"]["name"] == "metis-hand"
    assert saved["_metis"]["contract"]["version"] == 1
    loaded = MotionRVQ.from_pretrained(tmp_path / "tok")
    assert bool(loaded.normalization_fitted)
    assert torch.equal(loaded.feature_std, tokenizer.feature_std)
    assert torch.equal(loaded.encode(heldout.actions), tokenizer.encode(heldout.actions))


def test_one_hand_data_through_the_mask(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:4].clone()
    actions[:, :, list(LEFT.indices)] = 0.0
    mask = torch.tensor([[False, True]] * 4)
    codes = tokenizer.encode(actions, mask)
    decoded = tokenizer.decode(codes, actions[:, 0])
    assert bool((decoded[:, :, list(LEFT.indices)] == 0).all())
    right = list(RIGHT.indices)
    both = tokenizer.decode(tokenizer.encode(heldout.actions[:4]), heldout.actions[:4, 0])
    assert torch.allclose(decoded[:, :, right], both[:, :, right], atol=1e-5)


def test_right_hand_only_config_gives_20_tokens() -> None:
    tokenizer = MotionRVQ(small_config(hands=("right",)))
    assert tokenizer.tokens_per_window == 20
    windows = generate_motion_windows(64, seed=3)
    tokenizer.train()
    tokenizer.reconstruct(windows.actions, update_codebook=True)  # k-means initialisation
    codes = tokenizer.encode(windows.actions)
    assert codes.shape == (64, 20)
    decoded = tokenizer.decode(codes, windows.actions[:, 0])
    # The left hand has no tokens: it holds its start pose.
    left = list(LEFT.indices)
    assert torch.allclose(
        decoded[:, :, left], windows.actions[:, :1, left].expand(-1, 16, -1), atol=1e-5
    )


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.zeros(2, 39, dtype=torch.int64), r"shape \(B, 40\)"),
        (torch.zeros(2, 40), "integer"),
        (torch.full((2, 40), 128, dtype=torch.int64), r"\[0, 128\)"),
        (torch.full((2, 40), -1, dtype=torch.int64), r"\[0, 128\)"),
    ],
    ids=["count", "float", "too-large", "negative"],
)
def test_bad_codes_raise_value_error(codes, message) -> None:
    with pytest.raises(ValueError, match=message):
        trained().decode(codes, torch.zeros(2, 48))


def test_bad_inputs_raise_value_error(heldout) -> None:
    tokenizer = trained()
    with pytest.raises(ValueError, match=r"\(B, 16, 48\)"):
        tokenizer.encode(torch.zeros(2, 8, 48))
    bad = heldout.actions[:2].clone()
    bad[0, 5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(bad)
    with pytest.raises(ValueError, match="hand_mask"):
        tokenizer.encode(heldout.actions[:2], torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs `start`"):
        tokenizer.decode(tokenizer.encode(heldout.actions[:2]))
    with pytest.raises(ValueError, match="untrained"):
        MotionRVQ(small_config()).encode(heldout.actions[:2])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_levels": 0}, "num_levels"),
        ({"hands": ("left", "left")}, "distinct"),
        ({"hands": ("right", "left")}, "order"),
        ({"conv_kernels": (4,)}, "odd"),
        ({"action_layout": "other-v2"}, "metis-hand-v1"),
        ({"hidden_dim": 30, "attention_heads": 4}, "divisible"),
    ],
)
def test_config_validation(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        MotionRVQConfig(**fields)
    with pytest.raises(ComponentConfigError):
        MotionRVQConfig.from_dict({"latent_stepz": 3})


def test_training_resume_is_exact(tmp_path) -> None:
    windows = generate_motion_windows(512, seed=5)
    config = small_config(hidden_dim=32, latent_dim=32, codebook_size=64)
    # All 12 steps inside the warm-up: the learning rate does not depend on the total steps, so
    # a 7-step run extended to 12 is the 12-step run.
    train = dict(batch_size=32, log_every=5, checkpoint_every=5, seed=3, warmup_steps=100)
    straight = train_motion_rvq(
        windows,
        tmp_path / "a",
        model_config=config,
        train_config=TrainConfig(steps=12, **train),
        progress=False,
    )
    train_motion_rvq(
        windows,
        tmp_path / "b",
        model_config=config,
        train_config=TrainConfig(steps=7, **train),
        progress=False,
    )
    resumed = train_motion_rvq(
        windows,
        tmp_path / "b",
        model_config=config,
        train_config=TrainConfig(steps=12, **train),
        progress=False,
    )
    assert resumed.steps == 12
    a, b = straight.tokenizer.state_tensors(), resumed.tokenizer.state_tensors()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    record = json.loads((tmp_path / "a" / "training_log.jsonl").read_text().splitlines()[-1])
    assert {"loss", "dead_code_replacements", "codebook"} <= set(record)
    assert len(record["codebook"]) == 2
    assert 0.0 < record["codebook"][0]["live_fraction"] <= 1.0
    assert record["codebook"][0]["perplexity"] >= 1.0


def test_part_weights_weigh_the_loss_per_part() -> None:
    from metis_tokenizers.motion_rvq.modeling_motion_rvq import MotionRVQOutput
    from metis_tokenizers.training import reconstruction_loss

    generator = torch.Generator().manual_seed(0)
    target = torch.randn(3, 2, 16, 24, generator=generator)
    reconstruction = target + torch.randn(3, 2, 16, 24, generator=generator)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    output = MotionRVQOutput(reconstruction, target, torch.zeros(3, 2, 10, 2, dtype=torch.long), torch.tensor(0.0), present)  # fmt: skip
    squared = (reconstruction - target)[:, :, 1:] ** 2  # frame 0 is the start state, not coded
    used = squared[present]  # (4 present hands, 15, 24)
    assert reconstruction_loss(output).item() == pytest.approx(used.mean().item(), rel=1e-6)
    # only the wrist position counts: the weighted mean is the position MSE (weights renormalised
    # over the 24 values, so the scale of the loss is that of the mean over what is weighted)
    only_position = reconstruction_loss(output, (1.0, 0.0, 0.0)).item()
    assert only_position == pytest.approx(used[..., :3].mean().item(), rel=1e-6)
    tips_double = reconstruction_loss(output, (1.0, 1.0, 2.0)).item()
    expected = (used[..., :9].sum() + 2 * used[..., 9:].sum()) / (used[..., 0].numel() * 39)
    assert tips_double == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="part_weights"):
        TrainConfig(part_weights=(1.0, -1.0, 1.0))
