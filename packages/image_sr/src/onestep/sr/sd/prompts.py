"""Prompt embeddings for the SD UNet's cross-attention, from a frozen CLIP text encoder.

OSEDiff (Wu et al. 2024) conditions the student on tag prompts that DAPE extracts from the LQ
image and the teacher on the same prompts; the empty prompt ``""`` gives the unconditional
embedding (the negative branch of classifier-free guidance, and a prompt-free student). The text
encoder is frozen in every setup here, so embeddings are computed without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PromptEncoder"]


class PromptEncoder(nn.Module):
    """``prompts: list[str] -> [B, L, D]`` text embeddings, as ``StableDiffusionPipeline`` makes.

    Each prompt is padded / truncated to the tokenizer's ``model_max_length`` (SD: 77) and the
    encoder's last hidden state is returned (SD 2.x's text encoder already ends at the penultimate
    OpenCLIP layer). The empty-prompt embedding is computed once and cached.

    Args:
        text_encoder: a frozen CLIP text encoder (``CLIPTextModel``), or ``None`` when only the
            empty prompt is needed and ``empty`` is given.
        tokenizer: its tokenizer (``None`` with ``text_encoder=None``).
        empty: the empty-prompt embedding ``[1, L, D]``, for running without a text encoder.
    """

    def __init__(
        self, text_encoder: Any = None, tokenizer: Any = None, *, empty: Tensor | None = None
    ):
        super().__init__()
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError(
                "PromptEncoder needs both text_encoder and tokenizer, or neither; got only the "
                + ("tokenizer" if text_encoder is None else "text encoder")
            )
        if empty is not None and (empty.ndim != 3 or empty.shape[0] != 1):
            raise ValueError(f"empty must be a [1, L, D] embedding, got {tuple(empty.shape)}")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        if text_encoder is not None:
            text_encoder.requires_grad_(False)
            text_encoder.eval()
        self._empty: Tensor | None
        self.register_buffer("_empty", empty, persistent=False)

    @property
    def has_text_encoder(self) -> bool:
        """Whether non-empty prompts can be encoded."""
        return self.text_encoder is not None

    def empty(self) -> Tensor:
        """The unconditional (empty-prompt) embedding ``[1, L, D]``, cached after the first call."""
        if self._empty is None:
            if self.text_encoder is None:
                raise ValueError(
                    "PromptEncoder has neither a text encoder nor a cached empty-prompt embedding; "
                    "load the SD folder with text_encoder=True or pass empty=<[1, L, D] tensor>"
                )
            self._empty = self._encode([""])
        return self._empty

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> Tensor:
        assert self.text_encoder is not None and self.tokenizer is not None
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def forward(self, prompts: Sequence[str]) -> Tensor:
        """Embed a batch of prompts (``""`` is the unconditional prompt).

        Args:
            prompts: ``B`` strings.

        Returns:
            ``[B, L, D]`` in the text encoder's dtype (or ``empty``'s), no gradient.

        Raises:
            ValueError: for a non-empty prompt without a text encoder, or a bare string.
        """
        if isinstance(prompts, str):
            raise ValueError(f"pass a list of prompts, not the bare string {prompts!r}")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("PromptEncoder needs at least one prompt (use [''] for none)")
        if all(p == "" for p in prompts):
            return self.empty().expand(len(prompts), -1, -1)
        if self.text_encoder is None:
            given = next(p for p in prompts if p)
            raise ValueError(
                f"prompt {given!r} needs a text encoder, but this PromptEncoder has none; load "
                "the SD folder with text_encoder=True, or use the empty prompt ''"
            )
        return self._encode(prompts)
