"""Conformance checks for backbones (vision-language models of the METIS policy)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from metis_core.interfaces import Backbone
from metis_core.testing.component import ComponentConformance


def _images(count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *size, 3), generator=generator, dtype=torch.uint8)


class BackboneConformance(ComponentConformance):
    """Image and token embedding, the language model with and without a cache, padding,
    vocabulary growth and gradients — what :class:`~metis_core.vla.modeling_metis.MetisPolicy` relies on.

    Together with :class:`ComponentConformance`. Subclasses set ``component_name`` and small
    ``config_overrides``.

    Attributes:
        tolerance: Largest allowed difference between two computations of the same hidden
            states (cache vs recompute, padded vs unpadded), in the model's units.
        trials: Random sequences tried for the cache and padding checks (the worst is checked).
    """

    kind: ClassVar[str] = "backbones"
    tolerance: ClassVar[float] = 1e-4
    trials: ClassVar[int] = 4

    @pytest.fixture
    def component(self, registry: Any) -> Backbone:
        torch.manual_seed(0)
        model = registry.create(self.component_name, **self.config_overrides)
        return model.eval()

    def _embeds(self, backbone: Backbone, length: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, backbone.vocab_size, (1, length), generator=generator)
        return backbone.embed_tokens(ids)

    def test_image_embeddings_have_the_declared_shape(self, component: Backbone) -> None:
        pixels = component.preprocess(_images(2, (48, 64), 0))
        with torch.no_grad():
            embedded = component.embed_images(pixels)
        assert embedded.shape == (2, component.num_image_tokens, component.hidden_size)
        assert bool(torch.isfinite(embedded).all())

    def test_preprocess_rejects_what_is_not_uint8_rgb(self, component: Backbone) -> None:
        with pytest.raises(ValueError, match="uint8"):
            component.preprocess(torch.rand(1, 32, 32, 3))
        with pytest.raises(ValueError, match="3"):
            component.preprocess(torch.zeros(1, 32, 32, 4, dtype=torch.uint8))
        with pytest.raises(ValueError, match="empty"):
            component.preprocess(torch.zeros(0, 32, 32, 3, dtype=torch.uint8))

    def test_the_image_changes_the_embeddings(self, component: Backbone) -> None:
        black = torch.zeros(1, 40, 40, 3, dtype=torch.uint8)
        white = torch.full((1, 40, 40, 3), 255, dtype=torch.uint8)
        ids = torch.tensor([[1, 5, 9, 13]]) % component.vocab_size
        with torch.no_grad():
            a = component(pixel_values=component.preprocess(black), input_ids=ids)
            b = component(pixel_values=component.preprocess(white), input_ids=ids)
        assert float((a.hidden_states[:, -1] - b.hidden_states[:, -1]).abs().max()) > 1e-4

    def test_forward_inserts_the_image_after_the_first_token(self, component: Backbone) -> None:
        pixels = component.preprocess(_images(1, (40, 40), 1))
        ids = torch.tensor([[1, 7, 8, 9, 10]]) % component.vocab_size
        with torch.no_grad():
            out = component(pixel_values=pixels, input_ids=ids)
            tokens = component.embed_tokens(ids)
            images = component.embed_images(pixels)
            manual = torch.cat([tokens[:, :1], images.to(tokens.dtype), tokens[:, 1:]], 1)
            expected = component.run_language_model(manual)
        assert out.hidden_states.shape[1] == ids.shape[1] + component.num_image_tokens
        assert torch.allclose(out.hidden_states, expected.hidden_states, atol=1e-6)
        assert out.logits.shape[-1] == component.vocab_size

    def test_cached_decoding_equals_recomputing(self, component: Backbone) -> None:
        worst = 0.0
        for trial in range(self.trials):
            length = 6 + 3 * trial
            embeds = self._embeds(component, length, seed=trial)
            with torch.no_grad():
                full = component.run_language_model(embeds)
                prefix = component.run_language_model(embeds[:, :-2], use_cache=True)
                assert prefix.cache is not None, "use_cache=True must return a cache"
                mask = torch.ones(1, length - 1, dtype=torch.long)
                step1 = component.run_language_model(
                    embeds[:, -2:-1], attention_mask=mask, position_ids=torch.tensor([[length - 2]]),
                    cache=prefix.cache, use_cache=True,
                )  # fmt: skip
                mask = torch.ones(1, length, dtype=torch.long)
                step2 = component.run_language_model(
                    embeds[:, -1:], attention_mask=mask, position_ids=torch.tensor([[length - 1]]),
                    cache=step1.cache, use_cache=True,
                )  # fmt: skip
            for got, want in ((step1, full.hidden_states[:, -2]), (step2, full.hidden_states[:, -1])):  # fmt: skip
                worst = max(worst, float((got.hidden_states[:, -1] - want).abs().max()))
        assert worst < self.tolerance, f"cached decoding differs from recomputing by {worst:.3g}"

    def test_left_padding_with_positions_equals_no_padding(self, component: Backbone) -> None:
        worst = 0.0
        for trial in range(self.trials):
            short = self._embeds(component, 5 + trial, seed=100 + trial)
            long = self._embeds(component, 9 + trial, seed=200 + trial)
            pad = long.shape[1] - short.shape[1]
            padded = torch.cat([torch.zeros_like(long[:, :pad]), short], 1)
            mask = torch.ones(2, long.shape[1], dtype=torch.long)
            mask[0, :pad] = 0
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            with torch.no_grad():
                both = component.run_language_model(
                    torch.cat([padded, long]), attention_mask=mask, position_ids=positions
                )
                alone = component.run_language_model(short)
                alone_long = component.run_language_model(long)
            worst = max(
                worst,
                float((both.hidden_states[0, pad:] - alone.hidden_states[0]).abs().max()),
                float((both.hidden_states[1] - alone_long.hidden_states[0]).abs().max()),
            )
        assert worst < self.tolerance, f"left padding changes the hidden states by {worst:.3g}"

    def test_resize_vocabulary_pads_and_initialises_to_the_mean(self, component: Backbone) -> None:
        old_rows = component.vocab_size
        old = component.embed_tokens(torch.arange(old_rows)[None])[0].detach().clone()
        rows = component.resize_vocabulary(old_rows + 5, pad_to_multiple_of=64)
        assert rows % 64 == 0
        assert rows >= old_rows + 5
        assert component.vocab_size == rows
        new = component.embed_tokens(torch.arange(rows)[None])[0].detach()
        assert torch.equal(new[:old_rows], old)
        assert torch.allclose(new[old_rows:], old.mean(0).expand(rows - old_rows, -1), atol=1e-6)
        with torch.no_grad():
            out = component.run_language_model(new[None, :4])
        assert out.logits.shape[-1] == rows
        with pytest.raises(ValueError, match="shrink"):
            component.resize_vocabulary(1, pad_to_multiple_of=1)

    def test_gradients_reach_the_vision_path_and_the_language_model(
        self, component: Backbone
    ) -> None:
        component.train()
        pixels = component.preprocess(_images(2, (40, 40), 3))
        ids = torch.tensor([[1, 4, 6], [1, 8, 2]]) % component.vocab_size
        out = component(pixel_values=pixels, input_ids=ids)
        out.logits.float().logsumexp(-1).mean().backward()
        grads = {n: p.grad for n, p in component.named_parameters() if p.requires_grad}
        with_grad = [n for n, g in grads.items() if g is not None and float(g.abs().sum()) > 0]
        assert with_grad, "no parameter received a gradient"
        assert any(n in with_grad for n in grads if "embed" in n), (
            "the token embedding got no gradient"
        )
        vision = [n for n in with_grad if not any(k in n for k in ("llm", "language", "text", "lm_head", "embed_tokens"))]  # fmt: skip
        assert vision, "no vision/projector parameter received a gradient: the image is not used"
