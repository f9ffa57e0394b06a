"""Issue 13: a loaded tokenizer is inference-ready, and using it never changes it.

Also: invalid inputs raise clear ValueErrors, configs are bounded before anything is built,
mistyped local paths fail locally, decode takes the same hand mask as encode, coarse-to-fine
decoding, code embeddings and the straight-through decoding path.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from helpers_tokenizers import small_config, trained, trained_dir

from metis_core.contract import LEFT, RIGHT
from metis_core.interfaces import Tokenizer
from metis_core.registry import TOKENIZERS
from metis_tokenizers import MotionRVQ, MotionRVQConfig, generate_motion_windows
from metis_tokenizers.evaluation import reconstruction_errors


@pytest.fixture(scope="module")
def heldout():
    return generate_motion_windows(128, seed=1, split="heldout")


def _modes(module: torch.nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


def _state(tokenizer: MotionRVQ) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tokenizer.state_tensors().items()}


def test_loaded_tokenizer_is_in_eval_mode_by_every_route() -> None:
    for loaded in (
        MotionRVQ.from_pretrained(trained_dir()),
        Tokenizer.from_pretrained(trained_dir()),
        TOKENIZERS.create("motion_rvq"),
        MotionRVQ(small_config()),
    ):
        assert not any(_modes(loaded)), type(loaded).__name__


def test_encode_decode_and_calling_never_change_the_tokenizer(heldout) -> None:
    tokenizer = trained()
    actions, mask = heldout.actions[:32], heldout.hand_mask[:32]
    reference_codes = tokenizer.encode(actions, mask)
    reference = _state(tokenizer)
    # Calling the object encodes (as FAST users expect).
    assert torch.equal(tokenizer(actions, mask), reference_codes)
    for mode in ("train", "eval"):
        getattr(tokenizer, mode)()
        before = _modes(tokenizer)
        for _ in range(20):
            codes = tokenizer(actions, mask)
            tokenizer.encode(actions, mask)
            tokenizer.decode(codes, actions[:, 0], mask)
            tokenizer.reconstruct(actions, mask)  # the codebook is read, never written
        assert _modes(tokenizer) == before
        after = tokenizer.state_tensors()
        changed = [k for k in reference if not torch.equal(reference[k], after[k])]
        assert changed == [], changed
        assert torch.equal(tokenizer.encode(actions, mask), reference_codes)


def test_a_submodule_left_in_train_mode_is_run_in_eval_mode_and_left_as_it_was(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:16]
    codes = tokenizer.encode(actions)
    reference = tokenizer.decode(codes, actions[:, 0])
    tokenizer.decoder.blocks[0].train()  # a mixed state: only this block in train mode
    before = _modes(tokenizer)
    assert any(before)
    assert not all(before)
    assert torch.equal(tokenizer.decode(codes, actions[:, 0]), reference)
    assert torch.equal(tokenizer.encode(actions), codes)
    assert _modes(tokenizer) == before


def test_encode_and_decode_return_ordinary_tensors(heldout) -> None:
    tokenizer = trained()
    codes = tokenizer.encode(heldout.actions[:4])
    decoded = tokenizer.decode(codes, heldout.actions[:4, 0])
    assert not codes.is_inference()
    assert not decoded.is_inference()
    decoded[:, 0] = 0.0  # in-place edits are allowed
    codes[:, 0] = 1


def test_only_update_codebook_writes_the_codebook(heldout) -> None:
    tokenizer = trained().train()
    before = _state(tokenizer)
    tokenizer.reconstruct(heldout.actions, update_codebook=True)
    after = tokenizer.state_tensors()
    assert any(not torch.equal(before[k], after[k]) for k in before if "quantizer" in k)
    with pytest.raises(ValueError, match="train mode"):
        trained().reconstruct(heldout.actions, update_codebook=True)


def test_reconstruct_passes_gradients_to_the_encoder(heldout) -> None:
    tokenizer = trained()
    output = tokenizer.reconstruct(heldout.actions[:8])
    (output.reconstruction - output.target).pow(2).mean().backward()
    grad = tokenizer.encoder.input.weight.grad
    assert grad is not None
    assert float(grad.abs().sum()) > 0


# -- invalid input -----------------------------------------------------------------------------


def _zero_rotation(x: torch.Tensor, layout=LEFT) -> torch.Tensor:
    x = x.clone()
    x[..., layout.wrist_rot6d] = 0.0
    return x


def test_degenerate_rotations_of_present_hands_raise(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:4]
    codes = tokenizer.encode(actions)
    with pytest.raises(ValueError, match="left wrist rotation .* zero or degenerate"):
        tokenizer.decode(codes, _zero_rotation(actions[:, 0]))
    parallel = actions[:, 0].clone()
    parallel[:, RIGHT.wrist_rot6d] = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="right wrist rotation"):
        tokenizer.decode(codes, parallel)
    with pytest.raises(ValueError, match="left wrist rotation"):
        tokenizer.encode(_zero_rotation(actions))
    binning = TOKENIZERS.create("binning").fit(heldout.actions)
    with pytest.raises(ValueError, match="wrist rotation"):
        binning.encode(_zero_rotation(actions))
    # A hand marked missing may have zeros (that is how the contract writes it).
    missing = torch.tensor([[False, True]] * 4)
    assert tokenizer.encode(_zero_rotation(actions), missing).shape == (4, 40)
    decoded = tokenizer.decode(codes, _zero_rotation(actions[:, 0]), missing)
    assert bool((decoded[..., list(LEFT.indices)] == 0).all())


@pytest.mark.parametrize("value", [float("nan"), 0.5, 2.0, -1.0])
def test_hand_masks_of_non_booleans_raise(heldout, value) -> None:
    tokenizer = trained()
    for shape in ((4, 2), (4, 16, 2)):
        with pytest.raises(ValueError, match="hand_mask: expected booleans"):
            tokenizer.encode(heldout.actions[:4], torch.full(shape, value))
    ones = torch.ones(4, 16, 2)
    assert torch.equal(
        tokenizer.encode(heldout.actions[:4], ones), tokenizer.encode(heldout.actions[:4])
    )


def test_unfitted_and_untrained_tokenizers_raise(heldout) -> None:
    actions = heldout.actions[:2]
    with pytest.raises(ValueError, match="not fitted"):
        TOKENIZERS.create("binning").encode(actions)
    with pytest.raises(ValueError, match="not fitted"):
        TOKENIZERS.create("binning").decode(torch.zeros(2, 720, dtype=torch.long), actions[:, 0])
    with pytest.raises(ValueError, match="untrained"):
        MotionRVQ(small_config()).decode(torch.zeros(2, 40, dtype=torch.long), actions[:, 0])


def test_empty_batches_raise_for_every_tokenizer(heldout) -> None:
    motion = trained()
    binning = TOKENIZERS.create("binning").fit(heldout.actions)
    dct = TOKENIZERS.create("dct_bpe", vocab_size=300).fit(heldout.actions)
    for tokenizer, width in ((motion, 40), (binning, 720), (dct, 5)):
        with pytest.raises(ValueError, match="empty"):
            tokenizer.encode(heldout.actions[:0])
        codes = torch.zeros(0, width, dtype=torch.long)
        with pytest.raises(ValueError, match="empty"):
            tokenizer.decode(codes if tokenizer is not dct else [], heldout.actions[:0, 0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_converted(heldout, dtype) -> None:
    motion = trained()
    binning = TOKENIZERS.create("binning").fit(heldout.actions)
    for tokenizer in (motion, binning):
        actions = heldout.actions[:8].to(dtype)
        codes = tokenizer.encode(actions, heldout.hand_mask[:8].double())
        assert torch.equal(codes, tokenizer.encode(actions.float(), heldout.hand_mask[:8]))
        decoded = tokenizer.decode(codes, actions[:, 0])
        assert decoded.dtype == torch.float32
        assert torch.allclose(decoded, tokenizer.decode(codes, actions[:, 0].float()))
    assert motion.encode(heldout.actions[:2].numpy().astype(np.float64)).dtype == torch.int64


@pytest.mark.parametrize(
    "codes",
    [None, "abc", [[1, 2], [3]], [[1.5] * 720], [[True] * 720]],
    ids=["none", "str", "ragged", "float-list", "bool-list"],
)
def test_binning_decode_rejects_what_is_not_codes(heldout, codes) -> None:
    binning = TOKENIZERS.create("binning").fit(heldout.actions)
    with pytest.raises(ValueError, match="codes"):
        binning.decode(codes, heldout.actions[:1, 0])


def test_unsigned_codes_are_judged_by_value(heldout) -> None:
    binning = TOKENIZERS.create("binning").fit(heldout.actions)
    start = heldout.actions[:1, 0]
    good = binning.encode(heldout.actions[:1])
    for dtype in (torch.uint64, torch.uint32, torch.uint8):
        assert torch.equal(binning.decode(good.to(dtype), start), binning.decode(good, start))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        binning.decode(torch.full((1, 720), 2**40, dtype=torch.uint64), start)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        binning.decode(np.full((1, 720), 2**63, dtype=np.uint64), start)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_conv_blocks", 2**31),
        ("hidden_dim", 2**20),
        ("codebook_size", 2**30),
        ("conv_kernels", [3] * 100),
    ],
)
def test_crafted_config_json_is_refused_before_anything_is_built(tmp_path, field, value) -> None:
    directory = tmp_path / "crafted"
    trained().save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config[field] = value
    (directory / "config.json").write_text(json.dumps(config))
    began = time.perf_counter()
    with pytest.raises(ValueError, match=field):
        MotionRVQ.from_pretrained(directory)
    assert time.perf_counter() - began < 2.0


# -- local paths -------------------------------------------------------------------------------


def test_mistyped_local_paths_fail_locally_without_the_network(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked about a local path")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    for path in ("runs/rvqq", "./rvq", str(tmp_path / "runs" / "rvqq"), "runs/a/b"):
        for load in (MotionRVQ.from_pretrained, Tokenizer.from_pretrained):
            with pytest.raises(FileNotFoundError, match="no such directory"):
                load(path)


# -- missing hands: decode takes the mask encode took ------------------------------------------


def test_decode_takes_the_hand_mask_like_encode(heldout) -> None:
    tokenizer = trained()
    actions = heldout.actions[:8]
    mask = torch.tensor([[False, True]] * 8)
    codes = tokenizer.encode(actions, mask)  # the left hand's values are not zeros here
    decoded = tokenizer.decode(codes, actions[:, 0], mask)
    left, right = list(LEFT.indices), list(RIGHT.indices)
    assert bool((decoded[..., left] == 0).all())
    both = tokenizer.decode(codes, actions[:, 0])  # without the mask both count as present
    assert torch.allclose(decoded[..., right], both[..., right])
    assert float(both[..., left].abs().max()) > 0.01
    for name, extra in (("binning", {}), ("dct_bpe", {"vocab_size": 300})):
        other = TOKENIZERS.create(name, **extra).fit(heldout.actions)
        out = other.decode(other.encode(actions, mask), actions[:, 0], mask)
        assert bool((out[..., left] == 0).all()), name


# -- coarse-to-fine, code embeddings, straight-through -----------------------------------------


def test_coarse_to_fine_decoding_from_the_first_levels(heldout) -> None:
    tokenizer = trained()
    actions, mask = heldout.actions, heldout.hand_mask
    codes = tokenizer.encode(actions, mask)
    full = tokenizer.decode(codes, actions[:, 0], mask)
    assert torch.equal(tokenizer.decode(codes, actions[:, 0], mask, levels=2), full)
    coarse = tokenizer.decode(codes, actions[:, 0], mask, levels=1)
    level0 = codes.view(-1, 2, 10, 2)[..., :1].reshape(-1, 20)  # only the level-0 tokens
    assert torch.equal(tokenizer.decode(level0, actions[:, 0], mask, levels=1), coarse)
    fine = reconstruction_errors(actions, full, mask)["nmse"]
    rough = reconstruction_errors(actions, coarse, mask)["nmse"]
    assert fine < rough
    with pytest.raises(ValueError, match="levels"):
        tokenizer.decode(codes, actions[:, 0], levels=3)


def test_code_embeddings_and_straight_through_decoding(heldout) -> None:
    tokenizer = trained()
    embeddings = tokenizer.code_embeddings()
    assert embeddings.shape == (2, 128, 64)
    assert torch.equal(embeddings[0], embeddings[1])  # one shared codebook
    assert tokenizer.code_embeddings("codebook").shape == (2, 128, 32)
    actions = heldout.actions[:4]
    codes = tokenizer.encode(actions)
    logits = torch.randn(4, 40, 128) + 20 * torch.nn.functional.one_hot(codes, 128)
    logits.requires_grad_(True)
    decoded = tokenizer.decode_soft(logits.softmax(-1), actions[:, 0])
    assert torch.allclose(decoded, tokenizer.decode(codes, actions[:, 0]), atol=1e-5)
    (decoded - actions).pow(2).mean().backward()
    assert logits.grad is not None
    assert float(logits.grad.abs().sum()) > 0


def test_cosine_codebook_option_trains_and_decodes_consistently(tmp_path) -> None:
    from metis_tokenizers.training import TrainConfig, train_motion_rvq

    windows = generate_motion_windows(256, seed=4)
    config = small_config(hidden_dim=32, latent_dim=32, codebook_size=64, codebook_metric="cosine")
    result = train_motion_rvq(
        windows,
        tmp_path / "cos",
        model_config=config,
        train_config=TrainConfig(steps=4, batch_size=64, checkpoint_every=0, threads=1),
        progress=False,
    )
    tokenizer = result.tokenizer
    assert tokenizer.quantizer.layers[0]._codebook.use_cosine_sim
    with torch.no_grad():
        features, _ = tokenizer.prepare(windows.actions[:8], torch.ones(8, 2, dtype=torch.bool))
        latents = tokenizer.encoder(features.flatten(0, 1), tokenizer.hand_indices.repeat(8))
        quantised, indices, _ = tokenizer.quantizer(latents)
        assert torch.allclose(tokenizer.latents_from_codes(indices), quantised, atol=1e-5)
    with pytest.raises(ValueError, match="codebook_metric"):
        MotionRVQConfig(codebook_metric="manhattan")


def test_quantize_dropout_trains_and_encodes_every_level(tmp_path) -> None:
    from metis_tokenizers.training import TrainConfig, train_motion_rvq

    windows = generate_motion_windows(256, seed=4)
    config = small_config(hidden_dim=32, latent_dim=32, codebook_size=64, quantize_dropout=True)
    result = train_motion_rvq(
        windows,
        tmp_path / "qd",
        model_config=config,
        train_config=TrainConfig(
            steps=6, batch_size=64, log_every=3, checkpoint_every=0, threads=1
        ),
        progress=False,
    )
    assert result.steps == 6
    assert all(0.0 < level["live_fraction"] <= 1.0 for level in result.log[-1]["codebook"])
    codes = result.tokenizer.encode(windows.actions[:16])
    assert int(codes.min()) >= 0  # dropout only while training: every level is coded
    coarse = result.tokenizer.decode(codes, windows.actions[:16, 0], levels=1)
    assert bool(torch.isfinite(coarse).all())
