"""The dynamics vocabulary: code/id round trips, sequences, constrained generation, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from metis_tokenizers.vocabulary import (
    IGNORE_INDEX,
    DynamicsVocabulary,
    VocabularySpec,
)

CORPUS = [
    "put the red cube on the left",
    "put the blue cube in the middle",
    "reach the green cube with the right hand",
    "grasp the yellow cube",
    "move the purple cube on the right",
    "release the cube and open the drawer",
]


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained offline on a few sentences (LLaMA-like: bos only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


@pytest.fixture
def vocab() -> DynamicsVocabulary:
    return DynamicsVocabulary.add_to(tiny_tokenizer())


def random_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def test_adds_531_tokens_once_and_every_code_round_trips(vocab: DynamicsVocabulary) -> None:
    base = 320
    assert len(vocab) == len(vocab.tokenizer) == base + 16 + 512 + 3
    assert vocab.dynamics_tokens == 44
    again = DynamicsVocabulary.add_to(vocab.tokenizer)  # idempotent
    assert len(vocab.tokenizer) == base + 531
    assert torch.equal(again.added_ids, vocab.added_ids)
    # every code, each position of the step: codes -> ids -> codes is exact
    visual = torch.arange(16).repeat_interleave(4).reshape(-1, 4)  # (16, 4), code i everywhere
    motion = torch.arange(512).reshape(-1, 1).expand(-1, 40)  # (512, 40)
    assert torch.equal(vocab.ids_to_visual_codes(vocab.visual_codes_to_ids(visual)), visual)
    assert torch.equal(vocab.ids_to_motion_codes(vocab.motion_codes_to_ids(motion)), motion)
    # ids are the tokens' ids in the tokenizer, all distinct from the base vocabulary
    ids = vocab.tokenizer.convert_tokens_to_ids([f"<vis_{i}>" for i in range(16)])
    assert vocab.visual_codes_to_ids(torch.arange(16).reshape(4, 4)).flatten().tolist() == ids
    assert int(vocab.added_ids.min()) >= base
    assert vocab.tokenizer.decode(vocab.motion_codes_to_ids(torch.full((40,), 7))[:2]) == (
        "<mot_7><mot_7>"
    )
    # both kinds at once, batched
    gen = torch.Generator().manual_seed(0)
    v, m = torch.randint(0, 16, (8, 4), generator=gen), torch.randint(0, 512, (8, 40), generator=gen)  # fmt: skip
    back_v, back_m = vocab.ids_to_codes(vocab.codes_to_ids(v, m))
    assert torch.equal(back_v, v)
    assert torch.equal(back_m, m)


@pytest.mark.parametrize("subtask", [None, "grasp the yellow cube with the right hand"])
def test_training_sequence_decodes_to_the_same_codes_and_text(
    vocab: DynamicsVocabulary, subtask: str | None
) -> None:
    gen = torch.Generator().manual_seed(1)
    visual = torch.randint(0, 16, (4,), generator=gen)
    motion = torch.randint(0, 512, (40,), generator=gen)
    instruction = "put the red cube on the left"
    seq = vocab.build_sequence(instruction, visual, motion, subtask=subtask)
    ids = seq.input_ids.tolist()
    prompt = vocab.tokenizer(instruction).input_ids
    assert ids[: len(prompt)] == prompt
    assert seq.prompt_length == len(prompt)
    tok = vocab.tokenizer.convert_tokens_to_ids
    if subtask is None:
        assert ids[len(prompt)] == tok("[BOD]")
    else:
        assert ids[len(prompt)] == tok("[BOA]")
    assert ids[seq.dynamics_start - 1] == tok("[BOD]")
    assert ids[-1] == tok("[EOD]")
    assert len(ids) == seq.dynamics_start + 44 + 1
    # labels: nothing on the prompt, everything from the first control token on
    assert (seq.labels[: len(prompt)] == IGNORE_INDEX).all()
    assert torch.equal(seq.labels[len(prompt) :], seq.input_ids[len(prompt) :])
    assert int(seq.loss_mask.sum()) == len(ids) - len(prompt)
    codes = vocab.ids_to_codes(seq.input_ids[seq.dynamics_positions])
    assert torch.equal(codes[0], visual)
    assert torch.equal(codes[1], motion)
    parsed = vocab.parse(seq.input_ids)
    assert torch.equal(parsed.visual_codes, visual)
    assert torch.equal(parsed.motion_codes, motion)
    assert parsed.subtask == subtask
    assert parsed.complete
    # the text decodes as written
    text = vocab.tokenizer.decode(seq.input_ids, skip_special_tokens=True)
    assert text == instruction + (subtask or "")


def test_collate_pads_right_and_masks_padding(vocab: DynamicsVocabulary) -> None:
    a = vocab.build_sequence("grasp the cube", [1, 2, 3, 4], [5] * 40)
    b = vocab.build_sequence("put the blue cube in the middle", [0] * 4, [9] * 40, subtask="reach the cube")  # fmt: skip
    batch = vocab.collate([a, b], pad_to_multiple_of=8)
    length = batch["input_ids"].shape[1]
    assert length % 8 == 0
    assert length >= len(b.input_ids)
    assert batch["attention_mask"].sum(1).tolist() == [len(a.input_ids), len(b.input_ids)]
    assert (batch["labels"][0, len(a.input_ids) :] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, len(a.input_ids) :] == vocab.tokenizer.pad_token_id).all()
    pos = batch["dynamics_positions"]
    assert torch.equal(batch["input_ids"][1, pos[1]], vocab.codes_to_ids([0] * 4, [9] * 40))


def test_allowed_ids_per_step(vocab: DynamicsVocabulary) -> None:
    for step in range(4):
        assert torch.equal(vocab.allowed_ids(step), vocab.visual_ids)
    for step in range(4, 44):
        assert torch.equal(vocab.allowed_ids(step), vocab.motion_ids)
    assert vocab.allowed_ids(44).tolist() == [vocab.end_dynamics_id]
    with pytest.raises(ValueError, match=r"step must be in \[0, 44\]"):
        vocab.allowed_ids(45)


@pytest.mark.parametrize("do_sample", [False, True])
def test_random_model_generates_exactly_44_valid_codes(
    vocab: DynamicsVocabulary, do_sample: bool
) -> None:
    from transformers import LogitsProcessor

    model = random_llama(len(vocab))
    processor = vocab.logits_processor()
    assert isinstance(processor, LogitsProcessor)
    prompts = [vocab.prompt_ids("put the red cube on the left", mode="act")]
    prompts.append(vocab.prompt_ids("grasp the cube", mode="act"))
    for seed, prompt in enumerate(prompts):
        torch.manual_seed(seed)
        out = model.generate(
            prompt[None],
            attention_mask=torch.ones_like(prompt)[None],
            max_new_tokens=60,
            do_sample=do_sample,
            **vocab.generation_kwargs(),
        )[0]
        new = out[len(prompt) :]
        assert len(new) == 45  # stopped at the end marker
        assert (torch.isin(new[:4], vocab.visual_ids)).all()
        assert (torch.isin(new[4:44], vocab.motion_ids)).all()
        assert int(new[44]) == vocab.end_dynamics_id
        parsed = vocab.parse(out)
        assert parsed.subtask is None
        assert parsed.complete
        assert parsed.visual_codes.shape == (4,)
        assert parsed.motion_codes.shape == (40,)
    # without the processor the same random model does not produce a step
    plain = model.generate(prompts[0][None], max_new_tokens=45, do_sample=False, pad_token_id=2)
    with pytest.raises(
        ValueError, match=r"not (visual|motion) code tokens|code tokens$|not followed by"
    ):
        vocab.parse(plain[0])


def test_random_model_reasons_then_acts(vocab: DynamicsVocabulary) -> None:
    model = random_llama(len(vocab) + 7, seed=3)  # padded embedding: extra ids never allowed
    for mode in ("reason", "decide"):
        prompt = vocab.prompt_ids("put the blue cube in the middle", mode=mode)
        torch.manual_seed(0)
        out = model.generate(
            prompt[None],
            max_new_tokens=12 + 46,
            do_sample=True,
            **vocab.generation_kwargs(max_subtask_tokens=12),
        )[0]
        new = out[len(prompt) :].tolist()
        assert new[-1] == vocab.end_dynamics_id
        assert max(new) < len(vocab)
        parsed = vocab.parse(out)
        assert parsed.complete
        if mode == "reason" or new[0] == vocab.begin_reasoning_id:
            bod = new.index(vocab.begin_dynamics_id)
            text = new[1 if mode == "decide" else 0 : bod]
            assert 1 <= len(text) <= 12  # at least one text token, [BOD] forced after 12
            assert not set(text) & set(vocab.added_ids.tolist())
            assert parsed.subtask is not None
        else:
            assert new[0] == vocab.begin_dynamics_id
            assert len(new) == 46


def test_processor_states_on_a_batch(vocab: DynamicsVocabulary) -> None:
    processor = vocab.logits_processor(max_subtask_tokens=3)
    pad = vocab.tokenizer.pad_token_id
    boa, bod, eod = vocab.begin_reasoning_id, vocab.begin_dynamics_id, vocab.end_dynamics_id
    v0, m0 = int(vocab.visual_ids[0]), int(vocab.motion_ids[0])
    rows = [
        [pad, pad, 5, 6],  # nothing yet: decide
        [pad, 5, 6, boa],  # reasoning, first token
        [5, boa, 7, 8],  # reasoning
        [boa, 7, 8, 9],  # 3 reasoning tokens: [BOD] forced
        [5, bod, v0, v0],  # third visual code
    ]
    scores = torch.zeros(len(rows), len(vocab))
    masked = processor(torch.tensor(rows), scores)
    allowed = [set(torch.nonzero(torch.isfinite(r)).flatten().tolist()) for r in masked]
    assert allowed[0] == {boa, bod}
    assert bod not in allowed[1]
    assert 7 in allowed[1]
    assert v0 not in allowed[1]
    assert bod in allowed[2]
    assert not allowed[2] & set(vocab.added_ids.tolist()) - {bod}
    assert allowed[3] == {bod}
    assert allowed[4] == set(vocab.visual_ids.tolist())
    seq = [5, bod, *[v0] * 4, *[m0] * 40]
    after = processor(torch.tensor([seq, [*seq[1:], eod]]), torch.zeros(2, len(vocab)))
    assert set(torch.nonzero(torch.isfinite(after[0])).flatten().tolist()) == {eod}
    assert set(torch.nonzero(torch.isfinite(after[1])).flatten().tolist()) == {
        vocab.tokenizer.eos_token_id
    }
    with pytest.raises(ValueError, match="resize the embeddings"):
        processor(torch.tensor([[5]]), torch.zeros(1, 100))


def test_incremental_state_equals_rescanning_the_sequence(vocab: DynamicsVocabulary) -> None:
    """``state_of`` (what the policy's decoding loop tracks per row) gives the same mask-table
    row as ``states`` of the whole sequence, after every token of 300 random sequences mixing
    control tokens, text and codes."""
    processor = vocab.logits_processor(max_subtask_tokens=4)
    controls = [vocab.begin_reasoning_id, vocab.begin_dynamics_id, vocab.end_dynamics_id]
    pool = torch.tensor(
        [*controls, 5, 6, 7, *vocab.visual_ids[:3].tolist(), *vocab.motion_ids[:3].tolist()]
    )
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(300):
        length = int(torch.randint(1, 60, (1,), generator=gen))
        weights = torch.ones(len(pool))
        weights[:3] = 0.05  # control tokens rarely, so that long runs after one occur
        seq = pool[torch.multinomial(weights, length, replacement=True, generator=gen)].tolist()
        last, since = None, 0
        for end, token in enumerate(seq, start=1):
            if token in controls:
                last, since = token, 0
            else:
                since += 1
            expected = int(processor.states(torch.tensor([seq[:end]]))[0])
            assert processor.state_of(last, since) == expected, (seq[:end], last, since)
            checked += 1
    assert checked > 5000
    scores = torch.randn(2, len(vocab))
    states = [processor.state_of(None, 2), processor.state_of(controls[1], 0)]
    ids = torch.tensor([[5, 6], [5, controls[1]]])
    assert torch.equal(processor.mask(scores, states), processor(ids, scores))


def test_save_load_round_trip(vocab: DynamicsVocabulary, tmp_path: Path) -> None:
    directory = vocab.save_pretrained(tmp_path / "vocab")
    loaded = DynamicsVocabulary.from_pretrained(directory)
    assert loaded.spec == vocab.spec
    assert torch.equal(loaded.added_ids, vocab.added_ids)
    assert len(loaded.tokenizer) == len(vocab.tokenizer)
    seq = vocab.build_sequence("put the red cube on the left", [3, 1, 4, 1], list(range(40)), subtask="grasp the red cube")  # fmt: skip
    again = loaded.build_sequence("put the red cube on the left", [3, 1, 4, 1], list(range(40)), subtask="grasp the red cube")  # fmt: skip
    assert torch.equal(seq.input_ids, again.input_ids)
    assert loaded.parse(seq.input_ids).subtask == "grasp the red cube"
    # a tokenizer whose dynamics tokens sit at other ids is refused
    other = tiny_tokenizer()
    other.add_tokens(["<extra>"], special_tokens=True)
    DynamicsVocabulary.add_to(other)
    with pytest.raises(ValueError, match="other ids than were saved"):
        DynamicsVocabulary.from_pretrained(directory, tokenizer=other)
    with pytest.raises(FileNotFoundError, match="dynamics_vocabulary.json is missing"):
        DynamicsVocabulary.from_pretrained(tmp_path)


def test_custom_sizes_from_tokenizers(vocab: DynamicsVocabulary) -> None:
    class Fake:
        def __init__(self, size: int, tokens: int) -> None:
            self.vocab_size, self.tokens_per_window = size, tokens

    spec = VocabularySpec.from_tokenizers(Fake(8, 2), Fake(64, 6))
    small = DynamicsVocabulary.add_to(tiny_tokenizer(), spec)
    assert small.dynamics_tokens == 8
    assert len(small) == 320 + 8 + 64 + 3
    assert small.parse(small.build_sequence("grasp the cube", [7, 0], [63] * 6).input_ids).complete


def test_bad_inputs_raise_clear_errors(vocab: DynamicsVocabulary) -> None:
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        vocab.visual_codes_to_ids([0, 1, 2, 16])
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 40\)"):
        vocab.motion_codes_to_ids([1, 2, 3])
    with pytest.raises(ValueError, match="expected integers"):
        vocab.visual_codes_to_ids([0.5, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="are not visual code tokens"):
        vocab.ids_to_visual_codes(vocab.motion_ids[:4])
    with pytest.raises(ValueError, match="must not contain the control token"):
        vocab.build_sequence("put [BOD] it", [0] * 4, [0] * 40)
    with pytest.raises(ValueError, match="expected non-empty text"):
        vocab.build_sequence("grasp", [0] * 4, [0] * 40, subtask="  ")
    with pytest.raises(ValueError, match="takes one step"):
        vocab.build_sequence("grasp", [[0] * 4], [[0] * 40])
    seq = vocab.build_sequence("grasp the cube", [0] * 4, [0] * 40)
    with pytest.raises(ValueError, match="expected 44 code tokens"):
        vocab.parse(seq.input_ids[:-10])
    with pytest.raises(ValueError, match="not followed by"):
        vocab.parse(seq.input_ids[:-1])
    assert not vocab.parse(seq.input_ids[:-1], require_end=False).complete
    with pytest.raises(ValueError, match="no \\[BOD\\] token"):
        vocab.parse(vocab.prompt_ids("grasp the cube"))
    with pytest.raises(ValueError, match="expected a Hugging Face tokenizer"):
        DynamicsVocabulary.add_to(object())
    with pytest.raises(ValueError, match="lacks 531 dynamics tokens"):
        DynamicsVocabulary(tiny_tokenizer())
    with pytest.raises(ValueError, match="must be a positive integer"):
        VocabularySpec(visual_codes=0)
    with pytest.raises(ValueError, match="control tokens must differ"):
        VocabularySpec(end_dynamics="[BOD]")
    with pytest.raises(ValueError, match="mode must be"):
        vocab.prompt_ids("grasp", mode="think")  # type: ignore[arg-type]


def _step(vocab: DynamicsVocabulary) -> list[int]:
    visual = torch.arange(vocab.spec.visual_tokens) % vocab.spec.visual_codes
    motion = torch.arange(vocab.spec.motion_tokens) % vocab.spec.motion_codes
    return vocab.build_sequence(
        "grasp the cube", visual, motion, subtask="reach"
    ).input_ids.tolist()


@pytest.mark.parametrize("bad", [-1, -(2**40), 2**40, 10**6])
def test_parse_rejects_ids_outside_the_vocabulary_in_the_subtask(vocab, bad) -> None:
    ids = _step(vocab)
    boa = ids.index(vocab.begin_reasoning_id)
    ids.insert(boa + 1, bad)  # inside the subtask text
    with pytest.raises(ValueError, match=rf"ids: token ids must be in \[0, {len(vocab.tokenizer)}\)"):  # fmt: skip
        vocab.parse(ids)


def test_parse_rejects_code_tokens_inside_the_subtask_text(vocab) -> None:
    ids = _step(vocab)
    boa = ids.index(vocab.begin_reasoning_id)
    for pasted in (int(vocab.motion_ids[3]), int(vocab.visual_ids[0]), vocab.end_dynamics_id):
        broken = [*ids[: boa + 1], pasted, *ids[boa + 1 :]]
        with pytest.raises(ValueError, match="subtask text .* holds a dynamics token"):
            vocab.parse(broken)
    assert vocab.parse(ids).subtask == "reach"


@pytest.mark.parametrize("empty", [[], (), torch.zeros(0, dtype=torch.long)])
def test_parse_of_an_empty_sequence_says_so(vocab, empty) -> None:
    with pytest.raises(ValueError, match="the sequence is empty"):
        vocab.parse(empty)


# -- the authors' release layout (VocabularySpec.metis_release) -------------------------------


@pytest.fixture
def release() -> DynamicsVocabulary:
    return DynamicsVocabulary.add_to(tiny_tokenizer(), VocabularySpec.metis_release())


def test_release_layout_ids_relative_to_the_tokenizer(release: DynamicsVocabulary) -> None:
    base = 320
    tokenizer = release.tokenizer
    assert len(release) == base + 2 + 16 + 512  # no end token is added
    assert release.begin_dynamics_id == base  # <BOA> first
    assert release.begin_reasoning_id == base + 1  # then <BOR>
    assert release.visual_ids.tolist() == list(range(base + 2, base + 18))
    assert release.motion_ids.tolist() == list(range(base + 18, base + 530))
    assert release.end_dynamics_id == tokenizer.eos_token_id
    assert release.control_tokens == ("<BOR>", "<BOA>", "</s>")
    assert tokenizer.convert_ids_to_tokens([base, base + 1, base + 2, base + 18]) == ["<BOA>", "<BOR>", "<DYN_0>", "<DEX_0>"]  # fmt: skip
    assert release.allowed_ids(44).tolist() == [tokenizer.eos_token_id]
    again = DynamicsVocabulary.add_to(tokenizer, VocabularySpec.metis_release())
    assert torch.equal(again.added_ids, release.added_ids)
    assert len(tokenizer) == base + 530
    # the default layout is unchanged: codes first, then [BOA] [BOD] [EOD]
    default = DynamicsVocabulary.add_to(tiny_tokenizer())
    assert default.visual_ids[0] == base
    assert default.begin_reasoning_id == base + 528
    assert default.end_dynamics_id == base + 530


def test_release_sequence_generation_and_processor(release: DynamicsVocabulary) -> None:
    eos = release.tokenizer.eos_token_id
    seq = release.build_sequence("grasp the cube", [0, 15, 3, 4], [511] * 40, subtask="grasp the yellow cube")  # fmt: skip
    ids = seq.input_ids.tolist()
    assert ids[-1] == eos
    assert ids[-46] == release.begin_dynamics_id
    assert release.begin_reasoning_id in ids
    parsed = release.parse(seq.input_ids)
    assert parsed.complete
    assert parsed.subtask == "grasp the yellow cube"
    assert parsed.motion_codes.tolist() == [511] * 40
    with pytest.raises(ValueError, match="not followed by </s>"):
        release.parse(seq.input_ids[:-1])
    model = random_llama(len(release))
    prompt = release.prompt_ids("put the red cube on the left", mode="act")
    for seed in range(3):
        torch.manual_seed(seed)
        out = model.generate(prompt[None], max_new_tokens=60, do_sample=True, **release.generation_kwargs())[0]  # fmt: skip
        new = out[len(prompt) :]
        assert len(new) == 45
        assert int(new[44]) == eos
        assert release.parse(out).complete
    processor = release.logits_processor()
    step = [release.begin_dynamics_id, *[int(release.visual_ids[1])] * 4, *[int(release.motion_ids[2])] * 40]  # fmt: skip
    for rows in ([5, *step], [*step, eos], [*step, eos, eos]):
        allowed = torch.isfinite(processor(torch.tensor([rows]), torch.zeros(1, len(release))))[0]
        assert torch.nonzero(allowed).flatten().tolist() == [eos]
        last = max(i for i, t in enumerate(rows) if t in (release.begin_dynamics_id, eos))
        state = processor.state_of(rows[last], len(rows) - 1 - last)
        assert state == int(processor.states(torch.tensor([rows]))[0])
    decide = torch.isfinite(processor(torch.tensor([[5, 6]]), torch.zeros(1, len(release))))[0]
    assert set(torch.nonzero(decide).flatten().tolist()) == {release.begin_reasoning_id, release.begin_dynamics_id}  # fmt: skip


def test_release_spec_round_trips_and_old_files_still_load(release: DynamicsVocabulary, tmp_path: Path) -> None:  # fmt: skip
    import json

    directory = release.save_pretrained(tmp_path / "release")
    loaded = DynamicsVocabulary.from_pretrained(directory)
    assert loaded.spec == VocabularySpec.metis_release()
    assert loaded.spec.end_dynamics is None
    assert torch.equal(loaded.added_ids, release.added_ids)
    # a file written before the end marker and the order were configurable
    default = DynamicsVocabulary.add_to(tiny_tokenizer())
    old = default.save_pretrained(tmp_path / "old")
    data = json.loads((old / "dynamics_vocabulary.json").read_text())
    del data["token_order"]
    (old / "dynamics_vocabulary.json").write_text(json.dumps(data))
    assert DynamicsVocabulary.from_pretrained(old).spec == VocabularySpec()


def test_release_spec_validation() -> None:
    with pytest.raises(ValueError, match="token_order must name each of"):
        VocabularySpec(token_order=["visual", "motion", "begin_reasoning", "begin_dynamics"])
    with pytest.raises(ValueError, match=r"the eos is not added"):
        VocabularySpec.metis_release(token_order=[*["visual", "motion", "begin_reasoning", "begin_dynamics", "end_dynamics"]])  # fmt: skip
    with pytest.raises(ValueError, match="control tokens must differ"):
        VocabularySpec.metis_release(begin_reasoning="<BOA>")

    class NoEos:
        def __init__(self) -> None:
            self.inner = tiny_tokenizer()
            DynamicsVocabulary.add_to(self.inner, VocabularySpec.metis_release())
            self.eos_token_id = None

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self) -> int:
            return len(self.inner)

    with pytest.raises(ValueError, match="has no eos token"):
        DynamicsVocabulary(NoEos(), VocabularySpec.metis_release())
