"""Conformance checks for action heads of the METIS policy."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from metis_core.contract import ACTION_DIM
from metis_core.interfaces import ActionHead
from metis_core.testing.component import ComponentConformance


class ActionHeadConformance(ComponentConformance):
    """Chunk shape and dtype, sensitivity to every input, gradients, float32 under autocast,
    bad inputs. Together with :class:`ComponentConformance`.

    Subclasses set ``component_name`` and ``config_overrides`` that include ``input_dim``.

    Attributes:
        tokens: Dynamics-token states fed in the tests (44 for METIS).
        image_tokens: Image-position states fed in the tests.
    """

    kind: ClassVar[str] = "action_heads"
    tokens: ClassVar[int] = 44
    image_tokens: ClassVar[int] = 16

    @pytest.fixture
    def component(self, registry: Any) -> ActionHead:
        torch.manual_seed(0)
        return registry.create(self.component_name, **self.config_overrides)

    def _inputs(self, head: ActionHead, batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        width = int(head.config.input_dim)
        hidden = torch.randn(batch, self.tokens, width, generator=generator).to(dtype)
        images = torch.randn(batch, self.image_tokens, width, generator=generator).to(dtype)
        proprio = torch.randn(batch, ACTION_DIM, generator=generator)
        return hidden, proprio, images

    def test_predicts_a_float32_chunk(self, component: ActionHead) -> None:
        hidden, proprio, images = self._inputs(component)
        out = component(hidden, proprio, image_states=images)
        assert out.shape == (3, component.chunk_len, ACTION_DIM)
        assert out.dtype == torch.float32
        assert bool(torch.isfinite(out).all())

    def test_bfloat16_states_give_float32_actions_under_autocast(
        self, component: ActionHead
    ) -> None:
        hidden, proprio, images = self._inputs(component, dtype=torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = component(hidden, proprio, image_states=images)
        assert out.dtype == torch.float32
        reference = component(hidden.float(), proprio, image_states=images.float())
        assert torch.allclose(out, reference, atol=1e-5)

    def test_every_input_changes_the_chunk(self, component: ActionHead) -> None:
        component.eval()
        hidden, proprio, images = self._inputs(component, batch=1)
        base = component(hidden, proprio, image_states=images)
        for name, changed in (
            ("hidden_states", (hidden + 1.0, proprio, images)),
            ("proprio", (hidden, proprio + 1.0, images)),
            ("image_states", (hidden, proprio, images + 1.0)),
        ):
            out = component(changed[0], changed[1], image_states=changed[2])
            assert float((out - base).abs().max()) > 1e-5, f"the chunk ignores {name}"

    def test_every_parameter_gets_a_gradient(self, component: ActionHead) -> None:
        hidden, proprio, images = self._inputs(component)
        component(hidden, proprio, image_states=images).square().mean().backward()
        missing = [n for n, p in component.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0]  # fmt: skip
        assert not missing, f"parameters without gradient: {missing}"

    def test_bad_shapes_raise_clear_errors(self, component: ActionHead) -> None:
        hidden, proprio, images = self._inputs(component)
        with pytest.raises(ValueError, match="hidden_states"):
            component(hidden[..., :-1], proprio, image_states=images)
        with pytest.raises(ValueError, match="proprio"):
            component(hidden, proprio[:, :-1], image_states=images)
        with pytest.raises(ValueError, match="proprio"):
            component(hidden, proprio[:1], image_states=images)
