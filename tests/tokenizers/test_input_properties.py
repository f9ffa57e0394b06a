"""Issue 13: whatever is passed to encode / decode / parse, the answer is a clear ValueError or a
valid contract output (never a raw RuntimeError, TypeError, OverflowError or a silent garbage
result). Bounded example counts keep this well under a minute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_tokenizers import trained

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metis_core.contract import HAND_LAYOUTS  # noqa: E402
from metis_core.registry import TOKENIZERS  # noqa: E402
from metis_tokenizers import generate_motion_windows  # noqa: E402

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
WINDOWS = generate_motion_windows(8, seed=2, split="heldout")
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "motion_rvq": trained(),
        "binning": TOKENIZERS.create("binning").fit(WINDOWS.actions),
    }


@st.composite
def action_inputs(draw):
    """Windows that are sometimes valid and often not: shape, dtype, values, container."""
    batch = draw(st.sampled_from([0, 1, 3]))
    frames = draw(st.sampled_from([15, 16, 16, 16]))
    width = draw(st.sampled_from([47, 48, 48, 48]))
    base = WINDOWS.actions[:batch, :frames] if frames <= 16 else WINDOWS.actions[:batch]
    x = torch.zeros(batch, frames, width)
    x[:, : base.shape[1], : min(width, 48)] = base[:, :, : min(width, 48)]
    change = draw(st.sampled_from(["none", "nan", "inf", "zero_rotation", "huge", "parallel"]))
    if batch and change != "none":
        b, t = draw(st.integers(0, batch - 1)), draw(st.integers(0, frames - 1))
        if change == "nan":
            x[b, t, draw(st.integers(0, width - 1))] = float("nan")
        elif change == "inf":
            x[b, t, draw(st.integers(0, width - 1))] = float("inf")
        elif change == "huge":
            x[b, t, draw(st.integers(0, width - 1))] = 1e30
        elif width == 48:
            layout = HAND_LAYOUTS[draw(st.sampled_from(["left", "right"]))]
            x[b, t, layout.wrist_rot6d] = (
                0.0 if change == "zero_rotation" else torch.tensor([1.0, 0, 0, -3.0, 0, 0])
            )
    x = x.to(draw(st.sampled_from(DTYPES)))
    return draw(st.sampled_from(["tensor", "numpy", "list"])), x


def _container(kind: str, x: torch.Tensor):
    if kind == "numpy" and x.dtype != torch.bfloat16:
        return x.numpy()
    if kind == "list":
        return x.tolist()
    return x


@st.composite
def masks(draw, batch: int):
    kind = draw(st.sampled_from(["none", "bool", "float", "per_frame", "wrong_shape"]))
    if kind == "none":
        return None
    values = draw(st.sampled_from([0.0, 1.0, 0.5, float("nan"), 2.0]))
    if kind == "bool":
        return torch.tensor(draw(st.lists(st.booleans(), min_size=2 * batch, max_size=2 * batch))).view(batch, 2)  # fmt: skip
    if kind == "float":
        return torch.full((batch, 2), values)
    if kind == "per_frame":
        return torch.full((batch, 16, 2), values)
    return torch.ones(batch, 3, dtype=torch.bool)


def _check_message(err: ValueError) -> None:
    """A clear error: it says what the input was (a message naming the argument)."""
    message = str(err)
    if not any(
        word in message for word in ("actions", "hand_mask", "codes", "start", "ids", "levels")
    ):
        raise AssertionError(f"unclear error message: {message!r}")


def _check_windows_output(out: torch.Tensor, batch: int) -> None:
    assert out.dtype == torch.float32
    assert tuple(out.shape) == (batch, 16, 48)
    assert bool(torch.isfinite(out).all())


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["motion_rvq", "binning"]))
def test_encode_answers_a_valid_code_grid_or_a_value_error(tokenizers, data, which) -> None:
    tokenizer = tokenizers[which]
    kind, x = data.draw(action_inputs())
    mask = data.draw(masks(max(x.shape[0], 1)))
    try:
        codes = tokenizer.encode(_container(kind, x), mask)
    except ValueError as err:
        _check_message(err)
        return
    assert codes.dtype == torch.int64
    assert codes.shape == (x.shape[0], tokenizer.tokens_per_window)
    assert int(codes.min()) >= 0
    assert int(codes.max()) < tokenizer.vocab_size


@st.composite
def code_inputs(draw, width: int, vocab: int):
    batch = draw(st.sampled_from([0, 1, 2]))
    columns = draw(st.sampled_from([width, width, width - 1, 20]))
    low, high = draw(st.sampled_from([(0, vocab - 1), (-5, vocab + 5), (2**40, 2**41)]))
    values = draw(
        st.lists(st.integers(low, high), min_size=batch * columns, max_size=batch * columns)
    )
    kind = draw(
        st.sampled_from(
            ["int64", "int32", "uint8", "uint64", "float", "bool", "list", "none", "str"]
        )
    )
    if kind == "none":
        return None
    if kind == "str":
        return "1 2 3"
    array = np.asarray(values, dtype=object).reshape(batch, columns)
    if kind == "list":
        return array.tolist()
    if kind == "float":
        return torch.tensor(array.astype(np.float64))
    if kind == "bool":
        return torch.tensor(array.astype(np.int64) % 2 == 0)
    dtype = {"int64": np.int64, "int32": np.int32, "uint8": np.uint8, "uint64": np.uint64}[kind]
    with np.errstate(over="ignore"):
        clipped = np.clip(array.astype(np.float64), np.iinfo(dtype).min, np.iinfo(dtype).max)
    return torch.from_numpy(clipped.astype(dtype))


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["motion_rvq", "binning"]))
def test_decode_answers_valid_windows_or_a_value_error(tokenizers, data, which) -> None:
    tokenizer = tokenizers[which]
    codes = data.draw(code_inputs(tokenizer.tokens_per_window, tokenizer.vocab_size))
    batch = len(codes) if isinstance(codes, (list, torch.Tensor)) else 1
    start = WINDOWS.actions[: max(batch, 1), 0].clone()
    start_change = data.draw(st.sampled_from(["ok", "zero_rotation", "nan", "float64", "batch"]))
    if start_change == "zero_rotation":
        start[:, HAND_LAYOUTS["right"].wrist_rot6d] = 0.0
    elif start_change == "nan":
        start[0, 5] = float("nan")
    elif start_change == "float64":
        start = start.double()
    elif start_change == "batch":
        start = WINDOWS.actions[:5, 0]
    mask = data.draw(masks(start.shape[0]))
    try:
        out = tokenizer.decode(codes, start, mask)
    except ValueError as err:
        _check_message(err)
        return
    _check_windows_output(out, start.shape[0])
    present = torch.ones(start.shape[0], 2, dtype=torch.bool) if mask is None else mask.bool()
    for side, layout in HAND_LAYOUTS.items():
        rows = present[:, ["left", "right"].index(side)]
        index = list(layout.indices)
        assert torch.allclose(out[rows, 0][:, index], start.float()[rows][:, index], atol=1e-4)
        assert bool((out[~rows][:, :, index] == 0).all())


@pytest.fixture(scope="module")
def vocabulary():
    pytest.importorskip("transformers")
    from test_vocabulary import tiny_tokenizer

    from metis_tokenizers.vocabulary import DynamicsVocabulary

    return DynamicsVocabulary.add_to(tiny_tokenizer())


@SETTINGS
@given(data=st.data())
def test_parse_answers_a_valid_step_or_a_value_error(vocabulary, data) -> None:
    vocab = vocabulary
    visual = torch.tensor(
        data.draw(st.lists(st.integers(0, vocab.spec.visual_codes - 1), min_size=4, max_size=4))
    )
    motion = torch.tensor(
        data.draw(st.lists(st.integers(0, vocab.spec.motion_codes - 1), min_size=40, max_size=40))
    )
    ids = vocab.build_sequence("grasp", visual, motion, subtask="reach the cube").input_ids.tolist()
    edits = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["insert", "delete", "replace"]),
                st.integers(0, 200),
                st.sampled_from(
                    [
                        -1,
                        2**40,
                        int(vocab.motion_ids[0]),
                        int(vocab.visual_ids[1]),
                        vocab.begin_dynamics_id,
                        vocab.end_dynamics_id,
                        vocab.begin_reasoning_id,
                        5,
                    ]
                ),
            ),
            max_size=3,
        )
    )
    for action, position, value in edits:
        position = position % (len(ids) + 1)
        if action == "insert":
            ids.insert(position, value)
        elif ids and position < len(ids):
            if action == "delete":
                del ids[position]
            else:
                ids[position] = value
    try:
        parsed = vocab.parse(ids, require_end=data.draw(st.booleans()))
    except ValueError as err:
        _check_message(err)
        return
    assert parsed.visual_codes.shape == (4,)
    assert parsed.motion_codes.shape == (40,)
    assert int(parsed.visual_codes.min()) >= 0
    assert int(parsed.visual_codes.max()) < vocab.spec.visual_codes
    assert int(parsed.motion_codes.min()) >= 0
    assert int(parsed.motion_codes.max()) < vocab.spec.motion_codes
    if not edits:
        assert torch.equal(parsed.visual_codes, visual)
        assert torch.equal(parsed.motion_codes, motion)
        assert parsed.subtask == "reach the cube"
