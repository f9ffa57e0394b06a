"""Small shims over ``transformers`` that the VLA parts share (imported lazily).

``transformers`` 5 renamed the key/value cache argument of every causal LM from
``past_key_values`` to ``cache`` (4.x keeps the old name); the helpers here look the name up
from the installed signature instead of hard-coding either.
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import Any

import torch

from metis_core._optional import require

__all__ = [
    "INSTALL",
    "byte_level_tokenizer",
    "cache_argument",
    "mean_resize_embeddings",
    "output_cache",
    "run_causal_lm",
    "transformers_module",
]

#: What to install for the VLA parts.
INSTALL = "metis-core[vla]"


def transformers_module(feature: str = "the METIS policy") -> ModuleType:
    """``import transformers`` or an error naming ``pip install 'metis-core[vla]'``."""
    return require("transformers", install=INSTALL, feature=feature)


@functools.cache
def _cache_argument_of(forward: Any) -> str:
    params = inspect.signature(forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(
        f"{getattr(forward, '__qualname__', forward)} takes neither `cache` (transformers 5) nor "
        "`past_key_values` (transformers 4); this transformers version is not supported"
    )


def cache_argument(module: torch.nn.Module) -> str:
    """The keyword under which ``module.forward`` takes a key/value cache."""
    return _cache_argument_of(type(module).forward)


def output_cache(output: Any) -> Any:
    """The cache a model output holds, under either name."""
    fields = getattr(type(output), "__dataclass_fields__", {})
    # transformers 5 keeps a `past_key_values` property that warns: ask it only where it is a field.
    name = "cache" if "cache" in fields or "past_key_values" not in fields else "past_key_values"
    return getattr(output, name, None)


@torch.no_grad()
def mean_resize_embeddings(model: Any, size: int, *, pad_to_multiple_of: int = 64) -> int:
    """Resize a ``transformers`` model's token embeddings, new rows = the mean of the old ones.

    ``resize_token_embeddings``' default (``mean_resizing=True``) samples new rows from a normal
    with the old rows' covariance (a ``hidden × hidden`` matrix, slow at 4096 and random);
    METIS and Prismatic initialise them to the mean, which is deterministic and meta-safe.

    Args:
        model: A ``PreTrainedModel`` with input (and possibly output) embeddings.
        size: Tokens the tokenizer holds.
        pad_to_multiple_of: Round the row count up to this (64, as Prismatic does).

    Returns:
        The new row count.
    """
    if size < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {size}")
    old_in = model.get_input_embeddings()
    old_rows = int(old_in.weight.shape[0])
    rows = -(-size // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else size
    if rows == old_rows:
        return rows
    if rows < old_rows:
        raise ValueError(
            f"the language model already has {old_rows} embedding rows; refusing to shrink it to "
            f"{rows} (token ids of the trained model would be cut off)"
        )
    old_out = model.get_output_embeddings()
    out_weight = None if old_out is None else old_out.weight
    tied = out_weight is not None and out_weight is old_in.weight
    model.resize_token_embeddings(rows, pad_to_multiple_of=None, mean_resizing=False)
    new_in = model.get_input_embeddings().weight
    if new_in.device.type != "meta":
        new_in[old_rows:] = new_in[:old_rows].mean(0, keepdim=True)
    new_out = model.get_output_embeddings()
    if new_out is not None and not tied and new_out.weight.device.type != "meta":
        new_out.weight[old_rows:] = new_out.weight[:old_rows].mean(0, keepdim=True)
        bias = getattr(new_out, "bias", None)
        if bias is not None:
            bias[old_rows:] = bias[:old_rows].mean()
    return rows


def byte_level_tokenizer() -> Any:
    """A LLaMA-like text tokenizer that needs no files: one token per UTF-8 byte.

    ``<s>`` (bos, prepended), ``</s>`` (eos), ``<pad>`` and ``<unk>`` plus the 256 byte tokens of
    a byte-level BPE without merges. Used by the tiny configs (tests, CPU runs) so that nothing is
    downloaded; the paper configs take the real LLaMA-2 tokenizer from a local directory.
    """
    transformers = transformers_module("the byte-level text tokenizer")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<s>", "</s>", "<pad>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    return tokenizer


def run_causal_lm(
    model: Any,
    inputs_embeds: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cache: Any,
    use_cache: bool,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Run a ``transformers`` causal LM's decoder over embeddings, then its output head.

    Calling the decoder (``get_decoder()``) rather than the model gives the last-layer hidden
    states without keeping every layer's (``output_hidden_states``), and the cache keyword is
    looked up from the installed signature.

    Returns:
        ``(logits, last_hidden_states, cache)``.
    """
    decoder = model.get_decoder()
    kwargs = {cache_argument(decoder): cache, "use_cache": use_cache}
    dtype = model.get_input_embeddings().weight.dtype
    out = decoder(
        inputs_embeds=inputs_embeds.to(dtype),
        attention_mask=attention_mask,
        position_ids=position_ids,
        **kwargs,
    )
    hidden = out.last_hidden_state
    return model.get_output_embeddings()(hidden), hidden, output_cache(out)
