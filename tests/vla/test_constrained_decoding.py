"""Constrained decoding from random weights: always 4 visual + 40 motion codes, in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metis_core.vla import MetisConfig, MetisPolicy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROWS_PER_CALL = 25
SEEDS = 200


@pytest.fixture(scope="module")
def policy() -> MetisPolicy:
    torch.manual_seed(0)
    return MetisPolicy(MetisConfig.tiny(max_subtask_tokens=12, norm_mode="identity")).eval()


@pytest.mark.parametrize("reason", [None, True, False])
def test_random_weights_sample_exactly_44_valid_codes_in_order(policy: MetisPolicy, reason) -> None:
    v = policy.vocabulary
    visual_ids = set(v.visual_ids.tolist())
    motion_ids = set(v.motion_ids.tolist())
    image = np.random.default_rng(0).integers(0, 256, (ROWS_PER_CALL, 48, 48, 3), dtype=np.uint8)
    pixels = policy.backbone.preprocess(torch.from_numpy(image))
    prompt = policy.prompt_ids("pick up the cube", reason=reason)
    reasoned = 0
    for start in range(0, SEEDS, ROWS_PER_CALL):
        generators = [torch.Generator().manual_seed(seed) for seed in range(start, start + ROWS_PER_CALL)]  # fmt: skip
        temperature = 1.5 + (start // ROWS_PER_CALL) * 0.25  # 1.5 ... 3.25
        out = policy.generate(pixels, [prompt] * ROWS_PER_CALL, temperature=temperature, generator=generators)  # fmt: skip
        assert out.visual_codes.shape == (ROWS_PER_CALL, 4)
        assert out.motion_codes.shape == (ROWS_PER_CALL, 40)
        assert out.dynamics_states.shape == (ROWS_PER_CALL, 44, policy.backbone.hidden_size)
        for row, sequence in enumerate(out.sequences):
            tokens = prompt.tolist() + sequence
            bod = [i for i, t in enumerate(tokens) if t == v.begin_dynamics_id]
            assert len(bod) == 1, f"seed {start + row}: {len(bod)} [BOD] tokens"
            codes = tokens[bod[0] + 1 :]
            assert all(t in visual_ids for t in codes[:4]), (
                f"seed {start + row}: visual codes {codes[:4]}"
            )
            assert all(t in motion_ids for t in codes[4:44]), f"seed {start + row}: motion codes"
            assert codes[44:] == [v.end_dynamics_id], (
                f"seed {start + row}: {codes[44:]} after the codes"
            )
            before = tokens[: bod[0]]
            if reason is False:
                assert sequence[0] == v.visual_ids.tolist()[0] or sequence[0] in visual_ids
                assert out.subtasks[row] is None
            if out.subtasks[row] is not None:
                reasoned += 1
                assert v.begin_reasoning_id in before
                text_ids = before[before.index(v.begin_reasoning_id) + 1 :]
                assert 1 <= len(text_ids) <= 12
                assert not set(text_ids) & set(v.added_ids.tolist())
            assert int(out.visual_codes[row].min()) >= 0
            assert int(out.visual_codes[row].max()) < 16
            assert int(out.motion_codes[row].min()) >= 0
            assert int(out.motion_codes[row].max()) < 512
    if reason is True:
        assert reasoned == SEEDS
    if reason is None:
        assert 0 < reasoned < SEEDS, "sampling should take both paths from random weights"


def test_sampling_per_row_generators_do_not_depend_on_the_batch(policy: MetisPolicy) -> None:
    image = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    pixels = policy.backbone.preprocess(torch.from_numpy(image))
    prompt = policy.prompt_ids("open the drawer")
    batch = policy.generate(pixels, [prompt] * 3, temperature=2.0, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])  # fmt: skip
    alone = policy.generate(pixels[1:2], [prompt], temperature=2.0, generator=[torch.Generator().manual_seed(6)])  # fmt: skip
    assert batch.sequences[1] == alone.sequences[0]
