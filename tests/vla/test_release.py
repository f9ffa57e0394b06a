"""The ``metis_release`` preset and checkpoints in the authors' layout (AureleoPKU/Metis).

A tiny random-weight policy with the release preset is written by ``save_metis_release`` and
read back by ``load_metis_release``; the loaded policy must give the very same chunks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers_vla as h
import numpy as np
import pytest
import torch

from metis_core.io import CorruptFileError
from metis_core.vla import (
    MetisConfig,
    MetisPolicy,
    is_metis_release,
    load_metis_release,
    save_metis_release,
)
from metis_core.vla._hf import byte_level_tokenizer
from metis_core.vla.release import DECODER_FILE, ORIGINAL_PREFIX, STATISTICS_FILE, TRAINED_PREFIX
from metis_tokenizers.vocabulary import DynamicsVocabulary, VocabularySpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

INSTRUCTION = "Pick Up the red cube"


class Payload:
    """Anything that is not a tensor: the weights-only loader must refuse it."""

    def __reduce__(self):  # pragma: no cover - must never run
        return (print, ("unpickled!",))


@pytest.fixture(scope="module")
def policy() -> MetisPolicy:
    torch.manual_seed(0)
    config = MetisConfig.metis_release(tiny=True, max_subtask_tokens=12)
    return MetisPolicy(config, normalization=h.normalization("min_max")).eval()


@pytest.fixture(scope="module")
def release_dir(policy: MetisPolicy, tmp_path_factory) -> Path:
    return save_metis_release(policy, tmp_path_factory.mktemp("release") / "metis-g1")


@pytest.fixture(scope="module")
def loaded(release_dir: Path) -> MetisPolicy:
    return load_metis_release(release_dir)


def _inputs(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    states = np.concatenate([e.state for e in h.episodes()])
    picks = rng.choice(len(states), size=count, replace=False)
    return [
        (rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), states[i].astype(np.float32))
        for i in picks
    ]


def _copy(release_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(release_dir, tmp_path / "copy"))


# -- the preset -------------------------------------------------------------------------------


def test_preset_fields() -> None:
    config = MetisConfig.metis_release()
    assert config.chunk_len == 32
    assert config.prompt_template == "In: What action should the robot take to {instruction}?{subtask}\nOut: "  # fmt: skip
    assert config.image_states == "metis_release"
    assert config.norm_mode == "min_max"
    assert config.lowercase_instruction
    assert config.vocabulary["begin_dynamics"] == "<BOA>"
    assert config.vocabulary["begin_reasoning"] == "<BOR>"
    assert config.vocabulary["end_dynamics"] is None
    assert config.backbone_config["llm"]["hidden_size"] == 4096  # the paper's backbone
    tiny = MetisConfig.metis_release(tiny=True)
    assert tiny.backbone_config["llm"]["hidden_size"] == 64
    assert MetisConfig.from_dict(json.loads(json.dumps(tiny.to_dict(type_name="metis")))) == tiny
    with pytest.raises(ValueError, match=r"vocabulary: unknown fields \['visual_codes'\]"):
        MetisConfig.tiny(vocabulary={"visual_codes": 8})
    with pytest.raises(ValueError, match="only {instruction} and {subtask}"):
        MetisConfig.tiny(prompt_template="{instruction} {other}")


def test_release_vocabulary_layout_on_the_policy_tokenizer(policy: MetisPolicy) -> None:
    v = policy.vocabulary
    base = len(byte_level_tokenizer())  # the tokenizer before the dynamics tokens (has a pad)
    assert v.begin_dynamics_id == base
    assert v.begin_reasoning_id == base + 1
    assert v.visual_ids.tolist() == [base + 2 + i for i in range(16)]
    assert v.motion_ids.tolist() == [base + 18 + j for j in range(512)]
    assert v.end_dynamics_id == v.tokenizer.eos_token_id
    assert len(v) == base + 2 + 16 + 512
    assert v.tokenizer.convert_ids_to_tokens(base + 2 + 15) == "<DYN_15>"
    assert v.tokenizer.convert_ids_to_tokens(base + 18 + 511) == "<DEX_511>"
    assert policy.backbone.vocab_size == -(-len(v) // 64) * 64


def test_llama_ids_of_the_release_vocabulary() -> None:
    """With a 32000-token tokenizer + ``<PAD>`` (LLaMA-2 + Prismatic) the ids are the authors'."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, 32000)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # fmt: skip
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    assert tokenizer.pad_token_id == 32000
    v = DynamicsVocabulary.add_to(tokenizer, VocabularySpec.metis_release())
    assert (v.begin_dynamics_id, v.begin_reasoning_id) == (32001, 32002)
    assert (int(v.visual_ids[0]), int(v.visual_ids[-1])) == (32003, 32018)
    assert (int(v.motion_ids[0]), int(v.motion_ids[-1])) == (32019, 32530)
    assert v.end_dynamics_id == 2
    assert len(tokenizer) == 32531
    assert -(-len(tokenizer) // 64) * 64 == 32576


def test_prompt_and_training_sequence_under_the_preset(policy: MetisPolicy) -> None:
    v = policy.vocabulary
    text = policy.prompt_text(INSTRUCTION)
    assert text == "In: What action should the robot take to pick up the red cube?\nOut: "
    with_subtask = policy.prompt_text(INSTRUCTION, "grasp the cube")
    assert with_subtask.endswith("? Here is my previous reasoning: grasp the cube.\nOut: ")
    prompt = policy.prompt_ids(INSTRUCTION).tolist()
    assert prompt[0] == v.tokenizer.bos_token_id
    assert v.tokenizer.decode(prompt[1:]) == text  # the trailing space is kept
    seq = v.build_sequence(text, [1, 2, 3, 4], list(range(40)))
    ids = seq.input_ids.tolist()
    n = len(prompt)
    assert ids[:n] == prompt  # the prompt is a strict prefix of the training sequence
    assert ids[n] == v.begin_dynamics_id  # <BOA>
    assert ids[n + 1 : n + 5] == [v.begin_dynamics_id + 2 + c for c in (1, 2, 3, 4)]
    assert ids[n + 5 : n + 45] == [v.begin_dynamics_id + 18 + c for c in range(40)]
    assert ids[n + 45 :] == [v.tokenizer.eos_token_id]  # no [EOD]: the eos ends the step
    assert (seq.labels[:n] == -100).all()
    assert (seq.labels[n:] == seq.input_ids[n:]).all()
    assert int(seq.loss_mask.sum()) == 46  # <BOA>, 44 codes, </s>: the authors' labels
    parsed = v.parse(seq.input_ids)
    assert parsed.complete
    assert parsed.visual_codes.tolist() == [1, 2, 3, 4]


def test_prompt_matches_the_authors_tokenisation_with_a_sentencepiece_like_tokenizer() -> None:
    """With a LLaMA-like (Metaspace) tokenizer the prompt ends with the lone "▁" and the prompt +
    ``<BOA>`` are the ids of the authors' training text "In: ...?\nOut: <BOA>"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)  # fmt: skip
    backend.train_from_iterator(["In: What action should the robot take to pick up the cube?\nOut: done"] * 8, trainer)  # fmt: skip
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # fmt: skip
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    v = DynamicsVocabulary.add_to(tokenizer, VocabularySpec.metis_release())
    config = MetisConfig.metis_release()
    text = config.prompt_template.format(instruction="pick up the cube", subtask="")
    prompt = v.prompt_ids(text, mode="act").tolist()
    assert tokenizer.convert_ids_to_tokens(prompt[-2:]) == ["▁", "<BOA>"]
    authors = tokenizer.encode("In: What action should the robot take to pick up the cube?\nOut: <BOA>")  # fmt: skip
    assert prompt == authors


# -- decoding ---------------------------------------------------------------------------------


def test_constrained_decoding_200_seeds_ends_with_eos(policy: MetisPolicy) -> None:
    v = policy.vocabulary
    eos = v.tokenizer.eos_token_id
    visual, motion = set(v.visual_ids.tolist()), set(v.motion_ids.tolist())
    image = np.random.default_rng(0).integers(0, 256, (25, 48, 48, 3), dtype=np.uint8)
    pixels = policy.backbone.preprocess(torch.from_numpy(image))
    checked = reasoned = 0
    for reason in (False, None):
        prompt = policy.prompt_ids(INSTRUCTION, reason=reason)
        for start in range(0, 200 if reason is False else 50, 25):
            generators = [torch.Generator().manual_seed(s) for s in range(start, start + 25)]
            out = policy.generate(pixels, [prompt] * 25, temperature=1.5, generator=generators)
            for row, sequence in enumerate(out.sequences):
                tokens = prompt.tolist() + sequence
                boa = [i for i, t in enumerate(tokens) if t == v.begin_dynamics_id]
                assert len(boa) == 1
                codes = tokens[boa[0] + 1 :]
                assert len(codes) == 45
                assert all(t in visual for t in codes[:4])
                assert all(t in motion for t in codes[4:44])
                assert codes[44] == eos
                parsed = v.parse(torch.tensor(tokens))
                assert parsed.complete
                assert torch.equal(v.codes_to_ids(parsed.visual_codes, parsed.motion_codes), torch.tensor(codes[:44]))  # fmt: skip
                assert torch.equal(parsed.visual_codes, out.visual_codes[row])
                reasoned += out.subtasks[row] is not None
                checked += 1
    assert checked == 250
    assert 0 < reasoned < 50  # the decide prompt takes both <BOR> and <BOA> from random weights


def test_after_the_end_only_eos(policy: MetisPolicy) -> None:
    v = policy.vocabulary
    processor = v.logits_processor()
    eos = v.tokenizer.eos_token_id
    step = [v.begin_dynamics_id, *v.visual_ids[:4].tolist(), *v.motion_ids[:40].tolist()]
    rows = torch.tensor([[5, *step, eos], [*step, eos, eos]])
    allowed = torch.isfinite(processor(rows, torch.zeros(2, policy.backbone.vocab_size)))
    assert [torch.nonzero(r).flatten().tolist() for r in allowed] == [[eos], [eos]]
    end_state = processor.state_of(eos, 3)
    assert torch.nonzero(torch.isfinite(processor.mask(torch.zeros(1, len(v)), [end_state]))[0]).flatten().tolist() == [eos]  # fmt: skip
    assert v.generation_kwargs()["eos_token_id"] == [eos]


def test_visual_pooling_reads_positions_0_to_p(policy: MetisPolicy) -> None:
    """Under the preset the head pools ``<bos>`` + the first P-1 patches (positions [0, P))."""
    image = np.random.default_rng(3).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    pixels = policy.backbone.preprocess(torch.from_numpy(image))
    prompt = policy.prompt_ids(INSTRUCTION, reason=False)
    out = policy.generate(pixels, [prompt])
    with torch.no_grad():
        images = policy.backbone.embed_images(pixels)
        tokens = policy.backbone.embed_tokens(prompt[None])
        embeds = torch.cat([tokens[:, :1], images, tokens[:, 1:]], 1)
        hidden = policy.backbone.run_language_model(embeds).hidden_states
    p = policy.backbone.num_image_tokens
    assert p == 256
    assert out.image_states.shape == (1, p, policy.backbone.hidden_size)
    assert torch.allclose(out.image_states, hidden[:, 0:p], atol=1e-5)
    assert not torch.allclose(out.image_states, hidden[:, 1 : p + 1], atol=1e-3)


# -- save and load ----------------------------------------------------------------------------


def test_written_directory_has_the_authors_layout(policy: MetisPolicy, release_dir: Path) -> None:
    from safetensors.torch import load_file

    names = sorted(p.name for p in release_dir.iterdir())
    for needed in ("config.json", "model.safetensors", DECODER_FILE, STATISTICS_FILE, "tokenizer.json"):  # fmt: skip
        assert needed in names
    assert not any(n.startswith(("motion", "visual")) for n in names)
    assert is_metis_release(release_dir)
    config = json.loads((release_dir / "config.json").read_text())
    assert config["window_size"] == 32
    assert config["input_dim"] == 48
    assert config["vision_backbone_id"] == "dinosiglip-vit-so-224px"
    assert config["norm_stats"] == json.loads((release_dir / STATISTICS_FILE).read_text())
    stats = config["norm_stats"]["synthetic"]
    assert sorted(stats["action"]) == ["mask", "max", "mean", "min", "q01", "q99", "std"]
    assert len(stats["proprio"]["min"]) == 48
    keys = set(load_file(str(release_dir / "model.safetensors")))
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in keys if k.startswith("vision_backbone")}  # fmt: skip
    assert prefixes == {"vision_backbone.featurizer", "vision_backbone.fused_featurizer"}
    assert {"projector.fc1.weight", "projector.fc3.bias", "language_model.lm_head.weight"} <= keys
    assert "language_model.model.embed_tokens.weight" in keys
    decoder = torch.load(str(release_dir / DECODER_FILE), weights_only=True, map_location="cpu")
    head = policy.action_head.state_dict()
    assert set(decoder) == {f"{ORIGINAL_PREFIX}{k}" for k in head} | {f"{TRAINED_PREFIX}{k}" for k in head}  # fmt: skip
    assert "modules_to_save.default.proj.0.weight" in decoder
    assert "original_module.visual_pool.latents" in decoder
    assert decoder["modules_to_save.default.proj.0.weight"].shape == (32 * 48, 2 * 64)
    assert all(isinstance(v, torch.Tensor) for v in decoder.values())
    assert not is_metis_release(release_dir / "nope")


def test_a_native_checkpoint_is_not_a_release(policy: MetisPolicy, tmp_path: Path) -> None:
    native = policy.save_pretrained(tmp_path / "native")
    assert not is_metis_release(native)
    again = MetisPolicy.from_pretrained(native)  # the new config fields round-trip
    assert again.config == policy.config
    assert again.vocabulary.spec == policy.vocabulary.spec


def test_loaded_release_gives_identical_chunks(policy: MetisPolicy, loaded: MetisPolicy) -> None:
    assert loaded.config.chunk_len == 32
    assert loaded.vocabulary.added_ids.tolist() == policy.vocabulary.added_ids.tolist()
    assert loaded.normalization.default_key == "synthetic"
    ours, theirs = policy.state_dict(), loaded.state_dict()
    # timm has no class-position row: its value is folded into the class token (outputs equal)
    folded = ("backbone.dino.embeddings.cls_token", "backbone.dino.embeddings.position_embeddings")
    for name, value in ours.items():
        if not name.startswith(("motion_tokenizer.", "visual_tokenizer.")) and name not in folded:
            assert torch.equal(theirs[name], value), name
    cls, pos = (ours[k] for k in folded)
    assert torch.equal(theirs[folded[0]], cls + pos[:, :1])
    assert torch.equal(theirs[folded[1]][:, 1:], pos[:, 1:])
    for image, state in _inputs(3):
        ours = policy.predict_action(image, INSTRUCTION, state)
        theirs = loaded.predict_action(image, INSTRUCTION, state)
        assert theirs.actions.shape == (32, 48)
        assert theirs.actions.dtype == np.float32
        assert np.array_equal(ours.actions, theirs.actions)
        assert np.array_equal(ours.motion_codes, theirs.motion_codes)
        assert theirs.motion_window is None  # no motion tokenizer in the release
        assert np.isfinite(theirs.actions).all()
    images = np.stack([i for i, _ in _inputs(2)])
    states = np.stack([s for _, s in _inputs(2)])
    batch = loaded.predict_action(images, INSTRUCTION, states, temperature=0.75, top_p=0.9, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])  # fmt: skip
    again = policy.predict_action(images, INSTRUCTION, states, temperature=0.75, top_p=0.9, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])  # fmt: skip
    assert batch.actions.shape == (2, 32, 48)
    assert np.array_equal(batch.actions, again.actions)


def test_trained_dynamics_tokenizers_can_be_passed_in(tmp_path: Path) -> None:
    motion, visual = h.tokenizers()
    torch.manual_seed(1)
    config = MetisConfig.metis_release(tiny=True)
    policy = MetisPolicy(config, motion_tokenizer=motion, visual_tokenizer=visual, normalization=h.normalization("min_max")).eval()  # fmt: skip
    directory = save_metis_release(policy, tmp_path / "ckpt")
    loaded = load_metis_release(directory, motion_tokenizer=motion, visual_tokenizer=visual)
    image, state = _inputs(1)[0]
    ours, theirs = policy.predict_action(image, INSTRUCTION, state), loaded.predict_action(image, INSTRUCTION, state)  # fmt: skip
    assert np.array_equal(ours.actions, theirs.actions)
    assert theirs.motion_window is not None
    assert np.array_equal(ours.motion_window, theirs.motion_window)


def test_decoder_key_errors_name_the_key(release_dir: Path, tmp_path: Path) -> None:
    directory = _copy(release_dir, tmp_path)
    file = directory / DECODER_FILE
    decoder = torch.load(str(file), weights_only=True)
    missing = {k: v for k, v in decoder.items() if k != "modules_to_save.default.proj.0.bias"}
    torch.save(missing, str(file))
    with pytest.raises(CorruptFileError, match=r"missing \['proj\.0\.bias'\], unexpected \[\]"):
        load_metis_release(directory)
    torch.save({**decoder, "modules_to_save.default.extra.weight": torch.zeros(2)}, str(file))
    with pytest.raises(CorruptFileError, match=r"missing \[\], unexpected \['extra\.weight'\]"):
        load_metis_release(directory)
    # plain keys (a decoder saved without the PEFT wrapper) load too
    plain = {k.removeprefix(TRAINED_PREFIX): v for k, v in decoder.items() if k.startswith(TRAINED_PREFIX)}  # fmt: skip
    torch.save(plain, str(file))
    assert isinstance(load_metis_release(directory), MetisPolicy)
    torch.save({k: v for k, v in decoder.items() if k.startswith(ORIGINAL_PREFIX)}, str(file))
    with pytest.raises(CorruptFileError, match="only original_module"):
        load_metis_release(directory)
    wrong = dict(decoder)
    wrong["modules_to_save.default.proj.0.weight"] = torch.zeros(30 * 48, 128)
    torch.save(wrong, str(file))
    with pytest.raises(CorruptFileError, match=r"proj\.0\.weight: file \(1440, 128\), decoder \(1536, 128\)"):  # fmt: skip
        load_metis_release(directory)


def test_pickled_objects_in_the_decoder_file_are_refused(release_dir: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    directory = _copy(release_dir, tmp_path)
    decoder = torch.load(str(directory / DECODER_FILE), weights_only=True)
    torch.save({**decoder, "payload": Payload()}, str(directory / DECODER_FILE))
    with pytest.raises(CorruptFileError, match=r"was refused.*weights_only=True"):
        load_metis_release(directory)
    assert "unpickled!" not in capsys.readouterr().out


def test_statistics_errors_name_the_key(release_dir: Path, tmp_path: Path) -> None:
    directory = _copy(release_dir, tmp_path)
    file = directory / STATISTICS_FILE
    stats = json.loads(file.read_text())
    broken = json.loads(json.dumps(stats))
    del broken["synthetic"]["proprio"]["min"]
    file.write_text(json.dumps(broken))
    with pytest.raises(CorruptFileError, match=r"'synthetic'\.proprio lacks \['min'\]"):
        load_metis_release(directory)
    broken = json.loads(json.dumps(stats))
    del broken["synthetic"]["action"]
    file.write_text(json.dumps(broken))
    with pytest.raises(CorruptFileError, match=r"'synthetic' lacks 'action'"):
        load_metis_release(directory)
    file.write_text(json.dumps({**stats, "real_g1": stats["synthetic"]}))
    with pytest.raises(KeyError, match=r"several datasets \['real_g1', 'synthetic'\].*unnorm_key"):
        load_metis_release(directory)
    with pytest.raises(KeyError, match=r"no normalisation statistics for 'bridge'.*\['real_g1', 'synthetic'\]"):  # fmt: skip
        load_metis_release(directory, unnorm_key="bridge")
    chosen = load_metis_release(directory, unnorm_key="real_g1")
    assert chosen.normalization.default_key == "real_g1"
    file.unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        load_metis_release(directory)


def test_mask_false_dimensions_pass_through(policy: MetisPolicy, release_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    directory = _copy(release_dir, tmp_path)
    file = directory / STATISTICS_FILE
    stats = json.loads(file.read_text())
    stats["synthetic"]["action"]["mask"] = [i != 5 for i in range(48)]
    file.write_text(json.dumps(stats))
    loaded = load_metis_release(directory)
    values = torch.linspace(-1, 1, 48, dtype=torch.float64)[None]
    out = loaded.normalization.unnormalize(values, "action")
    reference = policy.normalization.unnormalize(values, "action", key="synthetic")
    assert float(out[0, 5]) == float(values[0, 5])  # not unnormalised where the mask is false
    assert torch.allclose(out[0, 6:], reference[0, 6:])


def test_backbone_weight_errors_and_non_release_policies(policy: MetisPolicy, release_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    from safetensors.torch import load_file, save_file

    from metis_core.vla.backbones.prismatic.weights_prismatic import KeyMappingError

    directory = _copy(release_dir, tmp_path)
    weights = load_file(str(directory / "model.safetensors"))
    weights.pop("projector.fc2.bias")
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(KeyMappingError, match=r"projector\.fc2\.bias"):
        load_metis_release(directory)
    with pytest.raises(ValueError, match=r"image_states = 'image'.*norm_mode = 'q01_q99'"):
        save_metis_release(h.tiny_policy(), tmp_path / "other")
    with pytest.raises(FileExistsError):
        save_metis_release(policy, release_dir)
    config = json.loads((directory / "config.json").read_text())
    del config["metis_config"]
    config["vision_backbone_id"] = "siglip-vit-so400m"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pass backbone_config="):
        load_metis_release(directory)
