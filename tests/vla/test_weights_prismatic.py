"""Key mapping of Prismatic (native) and OpenVLA (HF) checkpoints onto the Prismatic backbone."""

from __future__ import annotations

import json

import pytest
import torch

from metis_core.io import CorruptFileError
from metis_core.vla.backbones.prismatic import PrismaticBackbone, PrismaticConfig
from metis_core.vla.backbones.prismatic.weights_prismatic import (
    KeyMappingError,
    detect_layout,
    load_prismatic_weights,
    prismatic_state_dict,
    read_checkpoint,
    save_prismatic_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _backbone(seed: int, **overrides) -> PrismaticBackbone:
    torch.manual_seed(seed)
    backbone = PrismaticBackbone(PrismaticConfig.from_preset("tiny", **overrides)).eval()
    with torch.no_grad():
        # Random (non-default) values everywhere, so that a skipped key cannot go unnoticed.
        for name, param in backbone.named_parameters():
            if name != "dino.embeddings.mask_token":
                param.normal_(0, 0.5)
    return backbone


def _timm_ready(backbone: PrismaticBackbone) -> PrismaticBackbone:
    """What loading a timm tower gives: DINOv2's class-position row is zero."""
    if backbone.dino is not None:
        with torch.no_grad():
            backbone.dino.embeddings.position_embeddings[:, 0] = 0
    return backbone


def _outputs(backbone: PrismaticBackbone) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (2, 40, 56, 3), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)  # fmt: skip
    ids = torch.tensor([[0, 5, 9, 33, 200], [0, 17, 3, 99, 250]])
    with torch.no_grad():
        embedded = backbone.embed_images(backbone.preprocess(images))
        out = backbone(pixel_values=backbone.preprocess(images), input_ids=ids)
    return embedded, out.logits, out.hidden_states


def _assert_identical(a: PrismaticBackbone, b: PrismaticBackbone) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert different == []
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        assert torch.equal(x, y)


@pytest.fixture(scope="module")
def source() -> PrismaticBackbone:
    return _timm_ready(_backbone(0))


# -- round trips in each layout ---------------------------------------------------------------


def test_native_nested_pt_checkpoint_loads_exactly(source, tmp_path) -> None:
    nested = prismatic_state_dict(source, "prismatic", nested=True)
    assert set(nested["model"]) == {"projector", "llm_backbone", "vision_backbone"}
    assert "projector.0.weight" in nested["model"]["projector"]
    assert "llm.model.embed_tokens.weight" in nested["model"]["llm_backbone"]
    assert "dino_featurizer.blocks.1.attn.qkv.weight" in nested["model"]["vision_backbone"]
    assert "siglip_featurizer.attn_pool.kv.weight" in nested["model"]["vision_backbone"]
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    torch.save(nested, run / "latest-checkpoint.pt")  # the authors' format (a pickle of tensors)
    target = _backbone(1)
    report = load_prismatic_weights(target, tmp_path / "run")
    assert report.layout == "prismatic"
    assert report.kept == ["dino.embeddings.mask_token"]
    assert report.filled == {"dino.embeddings.position_embeddings": report.filled["dino.embeddings.position_embeddings"]}  # fmt: skip
    assert "zeros" in report.filled["dino.embeddings.position_embeddings"]
    _assert_identical(source, target)


def test_native_flat_safetensors_loads_exactly(source, tmp_path) -> None:
    path = save_prismatic_checkpoint(source, tmp_path / "prism.safetensors", layout="prismatic")
    keys = read_checkpoint(path)
    assert detect_layout(keys) == "prismatic"
    patches = source.config.num_patches
    assert keys["dino_featurizer.pos_embed"].shape == (1, patches, 32)  # timm: no class row
    assert keys["siglip_featurizer.pos_embed"].shape == (1, patches, 48)
    assert keys["dino_featurizer.blocks.0.ls1.gamma"].shape == (32,)
    target = _backbone(2)
    load_prismatic_weights(target, path, layout="prismatic")
    _assert_identical(source, target)


@pytest.mark.parametrize("shard_bytes", [None, 200_000])
def test_openvla_directory_loads_exactly(source, tmp_path, shard_bytes) -> None:
    path = save_prismatic_checkpoint(source, tmp_path / "openvla", max_shard_bytes=shard_bytes)
    files = sorted(p.name for p in path.iterdir())
    if shard_bytes is None:
        assert files == ["model.safetensors"]
    else:
        index = json.loads((path / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 2
        assert set(files) == {"model.safetensors.index.json", *shards}
    keys = read_checkpoint(path)
    assert {"projector.fc1.weight", "language_model.lm_head.weight",
            "vision_backbone.featurizer.blocks.0.ls1.scale_factor",
            "vision_backbone.fused_featurizer.attn_pool.latent"} <= set(keys)  # fmt: skip
    target = _backbone(3)
    report = load_prismatic_weights(target, path)
    assert report.layout == "openvla"
    assert len(report.loaded) == len(target.state_dict()) - 1
    _assert_identical(source, target)


def test_siglip_only_backbone_uses_the_single_featurizer_names() -> None:
    source = _backbone(4, dino=None)
    for layout, key in (("prismatic", "featurizer.attn_pool.q.weight"), ("openvla", "vision_backbone.featurizer.blocks.0.attn.qkv.weight")):  # fmt: skip
        state = prismatic_state_dict(source, layout)
        assert key in state
        target = _backbone(5, dino=None)
        load_prismatic_weights(target, state)
        _assert_identical(source, target)


def test_nonzero_class_row_is_folded_into_cls_token_on_export() -> None:
    source = _backbone(6)  # class-position row random, not zero
    target = _backbone(7)
    load_prismatic_weights(target, prismatic_state_dict(source, "openvla"))
    pos = target.dino.embeddings.position_embeddings
    assert torch.equal(pos[:, 0], torch.zeros_like(pos[:, 0]))
    assert torch.equal(pos[:, 1:], source.dino.embeddings.position_embeddings[:, 1:])
    folded = source.dino.embeddings.cls_token + source.dino.embeddings.position_embeddings[:, :1]
    assert torch.equal(target.dino.embeddings.cls_token, folded)
    for x, y in zip(_outputs(source), _outputs(target), strict=True):
        assert torch.allclose(x, y, atol=1e-5)


# -- the timm conventions, checked with independently built tensors ---------------------------


def test_timm_tensors_map_to_the_documented_places(source) -> None:
    state = prismatic_state_dict(source, "prismatic")
    h = 32  # DINOv2 tiny width
    q, k, v = (torch.full((h, h), float(i)) + torch.arange(h)[:, None] / 100 for i in (1, 2, 3))
    state["dino_featurizer.blocks.1.attn.qkv.weight"] = torch.cat([q, k, v])
    state["dino_featurizer.blocks.1.attn.qkv.bias"] = torch.arange(3 * h, dtype=torch.float32)
    gamma = torch.linspace(-1, 1, h)
    state["dino_featurizer.blocks.0.ls1.gamma"] = gamma
    patches = source.config.num_patches
    patch_pos = torch.randn(1, patches, h, generator=torch.Generator().manual_seed(1))
    state["dino_featurizer.pos_embed"] = patch_pos
    reg = torch.randn(1, 4, h, generator=torch.Generator().manual_seed(2))
    state["dino_featurizer.reg_token"] = reg
    s = 48  # SigLIP tiny width
    state["siglip_featurizer.attn_pool.q.weight"] = torch.full((s, s), 5.0)
    state["siglip_featurizer.attn_pool.kv.weight"] = torch.cat([torch.full((s, s), 6.0), torch.full((s, s), 7.0)])  # fmt: skip
    state["siglip_featurizer.attn_pool.q.bias"] = torch.full((s,), 8.0)
    state["siglip_featurizer.attn_pool.kv.bias"] = torch.full((2 * s,), 9.0)
    state["siglip_featurizer.attn_pool.latent"] = torch.full((1, 1, s), 4.0)
    siglip_pos = torch.arange(patches * s, dtype=torch.float32).view(1, patches, s)
    state["siglip_featurizer.pos_embed"] = siglip_pos
    state["siglip_featurizer.blocks.0.attn.qkv.weight"] = torch.cat([torch.full((s, s), float(i)) for i in (10, 11, 12)])  # fmt: skip
    target = _backbone(8)
    load_prismatic_weights(target, state)
    attention = target.dino.encoder.layer[1].attention
    assert torch.equal(attention.q_proj.weight, q)  # q = rows 0:H
    assert torch.equal(attention.k_proj.weight, k)  # k = rows H:2H
    assert torch.equal(attention.v_proj.weight, v)  # v = rows 2H:3H
    assert torch.equal(attention.q_proj.bias, torch.arange(h, dtype=torch.float32))
    assert torch.equal(attention.v_proj.bias, torch.arange(2 * h, 3 * h, dtype=torch.float32))
    assert torch.equal(target.dino.encoder.layer[0].layer_scale1.lambda1, gamma)
    pos = target.dino.embeddings.position_embeddings
    assert pos.shape == (1, patches + 1, h)
    assert torch.equal(pos[:, 0], torch.zeros(1, h))
    assert torch.equal(pos[:, 1:], patch_pos)
    assert torch.equal(target.dino.embeddings.register_tokens, reg)
    assert torch.equal(target.dino.embeddings.mask_token, torch.zeros(1, h))
    head = target.siglip.head
    assert torch.equal(head.probe, torch.full((1, 1, s), 4.0))
    expected = torch.cat([torch.full((s, s), 5.0), torch.full((s, s), 6.0), torch.full((s, s), 7.0)])  # fmt: skip
    assert torch.equal(head.attention.in_proj_weight, expected)
    assert torch.equal(head.attention.in_proj_bias, torch.cat([torch.full((s,), 8.0), torch.full((2 * s,), 9.0)]))  # fmt: skip
    assert torch.equal(target.siglip.embeddings.position_embedding.weight, siglip_pos[0])
    siglip_attention = target.siglip.encoder.layers[0].self_attn
    for proj, value in ((siglip_attention.q_proj, 10.0), (siglip_attention.k_proj, 11.0), (siglip_attention.v_proj, 12.0)):  # fmt: skip
        assert torch.equal(proj.weight, torch.full((s, s), value))
    # The native projector's Sequential indices 0, 2, 4 are fc1, fc2, fc3.
    assert torch.equal(target.projector.fc2.weight, state["projector.2.weight"])
    assert torch.equal(target.projector.fc3.bias, state["projector.4.bias"])


# -- vocabulary rows --------------------------------------------------------------------------


def test_smaller_checkpoint_vocabulary_copies_its_rows_and_keeps_ours(source) -> None:
    state = prismatic_state_dict(source, "openvla")  # 260 rows, like OpenVLA's 32064
    target = _backbone(9)
    rows = target.resize_vocabulary(300, pad_to_multiple_of=64)  # 320, like METIS's 32576
    before = target.llm.get_input_embeddings().weight.detach().clone()
    before_out = target.llm.get_output_embeddings().weight.detach().clone()
    report = load_prismatic_weights(target, state)
    assert report.partial_rows == {
        "llm.model.embed_tokens.weight": (260, rows),
        "llm.lm_head.weight": (260, rows),
    }
    embed = target.llm.get_input_embeddings().weight
    assert torch.equal(embed[:260], source.llm.get_input_embeddings().weight)
    assert torch.equal(embed[260:], before[260:])
    lm_head = target.llm.get_output_embeddings().weight
    assert torch.equal(lm_head[:260], source.llm.get_output_embeddings().weight)
    assert torch.equal(lm_head[260:], before_out[260:])


def test_larger_checkpoint_vocabulary_is_an_error(source) -> None:
    bigger = _backbone(10)
    bigger.resize_vocabulary(300, pad_to_multiple_of=64)
    with pytest.raises(
        KeyMappingError, match=r"vocabulary has 320 rows, more than the backbone's 260"
    ):
        load_prismatic_weights(_backbone(11), prismatic_state_dict(bigger, "openvla"))


def test_meta_device_backbone_is_assigned(source) -> None:
    with torch.device("meta"):
        target = PrismaticBackbone(PrismaticConfig.from_preset("tiny"))
    load_prismatic_weights(target, prismatic_state_dict(source, "prismatic"))
    state = target.state_dict()
    assert state["dino.embeddings.mask_token"].device.type == "meta"  # not in the checkpoint
    for key, value in source.state_dict().items():
        if key != "dino.embeddings.mask_token":
            assert torch.equal(state[key], value), key


# -- strictness -------------------------------------------------------------------------------


def test_missing_key_is_named(source) -> None:
    state = prismatic_state_dict(source, "openvla")
    del state["vision_backbone.featurizer.blocks.1.attn.qkv.bias"]
    del state["language_model.model.norm.weight"]
    with pytest.raises(KeyMappingError) as err:
        load_prismatic_weights(_backbone(12), state)
    assert err.value.missing == [
        "dino.encoder.layer.1.attention.k_proj.bias",
        "dino.encoder.layer.1.attention.q_proj.bias",
        "dino.encoder.layer.1.attention.v_proj.bias",
        "llm.model.norm.weight",
    ]
    assert "llm.model.norm.weight" in str(err.value)
    assert err.value.unmapped == []
    target = _backbone(12)
    before = target.llm.model.norm.weight.detach().clone()
    report = load_prismatic_weights(target, state, strict=False)
    assert "llm.model.norm.weight" in report.kept
    assert torch.equal(target.llm.model.norm.weight, before)


def test_extra_key_is_named(source) -> None:
    state = prismatic_state_dict(source, "prismatic")
    state["dino_featurizer.blocks.7.attn.qkv.weight"] = torch.zeros(96, 32)
    # A buffer older transformers versions saved.
    state["llm.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)
    with pytest.raises(KeyMappingError) as err:
        load_prismatic_weights(_backbone(13), state)
    assert err.value.unmapped == ["dino_featurizer.blocks.7.attn.qkv.weight"]
    assert err.value.missing == []
    assert "dino_featurizer.blocks.7.attn.qkv.weight" in str(err.value)
    report = load_prismatic_weights(_backbone(13), state, strict=False)
    assert report.unmapped == ["dino_featurizer.blocks.7.attn.qkv.weight"]
    assert report.skipped == ["llm.model.layers.0.self_attn.rotary_emb.inv_freq"]


def test_wrong_shape_is_named_even_when_not_strict(source) -> None:
    state = prismatic_state_dict(source, "openvla")
    state["projector.fc2.weight"] = torch.zeros(64, 321)
    state["vision_backbone.fused_featurizer.pos_embed"] = torch.zeros(1, 25, 48)  # 5 x 5 patches
    for strict in (True, False):
        with pytest.raises(KeyMappingError) as err:
            load_prismatic_weights(_backbone(14), state, strict=strict)
        assert len(err.value.mismatched) == 2
        assert "projector.fc2.weight: checkpoint gives (64, 321), the backbone has (64, 320)" in str(err.value)  # fmt: skip
        assert "siglip.embeddings.position_embedding.weight: checkpoint gives (25, 48)" in str(err.value)  # fmt: skip


def test_action_decoder_keys_are_handed_back(source) -> None:
    state = prismatic_state_dict(source, "openvla")
    decoder = {"action_decoder.proj.0.weight": torch.ones(3, 2), "action_decoder.proprio_proj.0.bias": torch.ones(2)}  # fmt: skip
    report = load_prismatic_weights(_backbone(15), {**state, **decoder})
    assert sorted(report.ignored) == sorted(decoder)
    with pytest.raises(KeyMappingError, match=r"action_decoder\.proj\.0\.weight"):
        load_prismatic_weights(_backbone(15), {**state, **decoder}, ignore_prefixes=())


def test_a_renamed_transformers_module_fails_loudly(source) -> None:
    target = _backbone(16)
    attention = target.dino.encoder.layer[0].attention
    attention.add_module("query_v9", attention.q_proj)
    delattr(attention, "q_proj")
    with pytest.raises(KeyMappingError) as err:
        load_prismatic_weights(target, prismatic_state_dict(source, "prismatic"))
    message = str(err.value)
    assert "dino.encoder.layer.0.attention.query_v9.weight" in err.value.missing
    assert "no installed module dino.encoder.layer.0.{attention.q_proj.weight|attention.attention.query.weight}" in message  # fmt: skip
    assert "dino_featurizer.blocks.0.attn.qkv.weight" in err.value.unmapped


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(KeyMappingError, match="neither the OpenVLA"):
        load_prismatic_weights(_backbone(17), {"encoder.weight": torch.zeros(2)})


# -- no pickle --------------------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pt_file_with_a_non_tensor_object_is_refused(source, tmp_path, capsys) -> None:
    state = prismatic_state_dict(source, "prismatic", nested=True)
    state["model"]["projector"]["projector.0.weight"] = _Payload()
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(CorruptFileError, match="weights_only"):
        load_prismatic_weights(_backbone(18), path)
    assert "this must never run" not in capsys.readouterr().out
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"projector": {"projector.0.weight": "text"}}}, plain)
    with pytest.raises(CorruptFileError, match="holds a str, expected a tensor"):
        read_checkpoint(plain)


def test_paper_size_export_has_the_published_openvla_parameter_count() -> None:
    """An independent check of the mapping at full size: the OpenVLA layout of the paper
    backbone with OpenVLA's 32,064-row vocabulary holds exactly OpenVLA-7B's 7,541,237,184
    parameters (timm towers: no mask token, no DINOv2 class-position row)."""
    with torch.device("meta"):
        backbone = PrismaticBackbone(PrismaticConfig.from_preset("paper"))
        backbone.resize_vocabulary(32001, pad_to_multiple_of=64)
    state = prismatic_state_dict(backbone, "openvla")

    def count(prefix: str) -> int:
        return sum(v.numel() for k, v in state.items() if k.startswith(prefix))

    assert count("vision_backbone.featurizer.") == 303_230_976
    assert count("vision_backbone.fused_featurizer.") == 427_680_704
    assert count("projector.") == 71_385_600
    assert count("language_model.") == 6_738_939_904
    assert sum(v.numel() for v in state.values()) == 7_541_237_184
    assert state["vision_backbone.featurizer.pos_embed"].shape == (1, 256, 1024)
    assert state["vision_backbone.featurizer.blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert state["vision_backbone.fused_featurizer.attn_pool.kv.weight"].shape == (2304, 1152)
    assert len([k for k in state if k.startswith("vision_backbone.featurizer.")]) == 343
