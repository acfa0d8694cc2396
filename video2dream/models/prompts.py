"""Long and weighted prompts, read as AUTOMATIC1111 reads them and encoded through compel.

A1111's syntax: `(words)` weighs them 1.1 times, `((words))` 1.21, `[words]` 1/1.1, `(words:1.3)` 1.3;
`\\(` is a literal parenthesis. parse_a1111 turns a prompt into (text, weight) fragments exactly as
A1111's parser does (unclosed brackets weigh to the end; a `:1.3)` outside brackets is text). compel
then encodes the fragments: tokens in chunks of 75 (split at the last phrase boundary before the
75th token, as A1111 backs up to a comma), each chunk framed by its start and end tokens and
encoded alone, the chunks concatenated, so that nothing is cut; a weight scales its tokens'
embeddings from those of the empty prompt (compel's way; A1111 rescales the mean instead). The
pooled embedding, as in A1111, is that of the first 77 tokens of the text without its weights.
A1111's prompt editing ([a:b:0.5]), alternation ([a|b]) and BREAK are not read: they stay text.
"""

from __future__ import annotations

import re
from typing import Any

# One token of A1111's attention syntax: an escape, a bracket, ':WEIGHT)', plain text, or a lone ':'.
_TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)|\)|]|[^\\()\[\]:]+|:")
ROUND, SQUARE = 1.1, 1 / 1.1


def parse_a1111(prompt: str) -> list[tuple[str, float]]:
    """A1111's `(a:1.2) [b] \\(c\\)` -> [('a', 1.2), (' ', 1.0), ('b', 0.909...), (' (c)', 1.0)]: runs of
    text with their weights, neighbours of the same weight merged; [('', 1.0)] for an empty prompt."""
    parts: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def weigh(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for match in _TOKEN.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            parts.append([token[1], 1.0])
        elif token == "(":
            rounds.append(len(parts))
        elif token == "[":
            squares.append(len(parts))
        elif weight is not None and rounds:
            weigh(rounds.pop(), float(weight))
        elif token == ")" and rounds:
            weigh(rounds.pop(), ROUND)
        elif token == "]" and squares:
            weigh(squares.pop(), SQUARE)
        else:
            parts.append([token, 1.0])
    for start in rounds:  # unclosed: they weigh to the end
        weigh(start, ROUND)
    for start in squares:
        weigh(start, SQUARE)
    merged: list[list[Any]] = []
    for text, weight in parts:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(t, w) for t, w in merged] or [("", 1.0)]


class WeightedEncoder:
    """Prompt embeddings for SDXL pipelines from A1111-syntax prompts, through compel: the base's two
    encoders (their penultimate states, concatenated) or the refiner's second one alone; the pooled
    embedding from the last encoder (text_encoder_2)."""

    def __init__(self, tokenizers: list[Any], text_encoders: list[Any], dtype: Any) -> None:
        from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

        self.compels = [
            Compel(tokenizer=tok, text_encoder=enc, truncate_long_prompts=False,
                   returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                   requires_pooled=False, split_long_text_mode=SplitLongTextMode.PHRASES,
                   dtype_for_device_getter=lambda _device: dtype)
            for tok, enc in zip(tokenizers, text_encoders, strict=True)]

    def encode(self, prompt: str) -> tuple[list[Any], Any]:
        """([one (1, 77 * chunks, D) tensor per encoder], pooled (1, P)): the prompt whole, weighted."""
        from compel.prompt_parser import Conjunction, FlattenedPrompt

        fragments = parse_a1111(prompt)
        conjunction = Conjunction([FlattenedPrompt(list(fragments))])
        embeds = [c.build_conditioning_tensor_for_conjunction(conjunction)[0] for c in self.compels]
        plain = "".join(text for text, _ in fragments)
        pooled = self.compels[-1].conditioning_provider.get_pooled_embeddings([plain])
        return self._same_length(embeds), pooled

    def _same_length(self, embeds: list[Any]) -> list[Any]:
        """Each encoder's chunks are the same (one BPE vocabulary); pad with empty chunks if not."""
        longest = max(e.shape[1] for e in embeds)
        return [self._pad(i, e, longest) for i, e in enumerate(embeds)]

    def _pad(self, i: int, embed: Any, length: int) -> Any:
        """embed padded with encoder i's empty-prompt chunk to length tokens (as A1111 pads the
        shorter of a prompt and its negative)."""
        import torch

        empty = self.compels[i].conditioning_provider.empty_z.to(embed.device, embed.dtype)
        while embed.shape[1] < length:
            embed = torch.cat([embed, empty], dim=1)
        return embed

    def pair(self, prompt: str, negative: str) -> dict[str, Any]:
        """A prompt and its negative as one unit's pipeline arguments (both the same length, which
        depends on this pair alone: a frame's picture does not depend on its batch)."""
        import torch

        (pos, pooled), (neg, neg_pooled) = self.encode(prompt), self.encode(negative)
        length = max(pos[0].shape[1], neg[0].shape[1])
        pos = [self._pad(i, e, length) for i, e in enumerate(pos)]
        neg = [self._pad(i, e, length) for i, e in enumerate(neg)]
        return {"prompt_embeds": torch.cat(pos, dim=-1), "negative_prompt_embeds": torch.cat(neg, dim=-1),
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}


def stack(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Units' arguments of the same length, as one batch's."""
    import torch

    return {name: torch.cat([p[name] for p in pairs]) for name in pairs[0]}
