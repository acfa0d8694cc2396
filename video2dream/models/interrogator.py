"""CLIP Interrogator: our open_clip model and BLIP captions fed to the clip-interrogator package.

We load the CLIP model ourselves (so that `tiny:clip`, the HF cache and HF_HUB_OFFLINE work the same
as everywhere else) and hand it to `clip_interrogator.Interrogator`, which builds its label tables
(~110k phrases: artists, flavors, mediums, movements, trendings, negatives) and caches their text
embeddings on disk. The package never captions and never downloads: captions are ours.

Ranking is ours too. The package's `LabelTable.rank` takes one image at a time, restacks the whole
table on every call, and is approximate when a table has more labels than `chunk_size`: it keeps
`int(chunk_size / num_chunks)` labels per chunk, so asking the 101k flavors for 2048 gives 2000 at
chunk 2048, 396 at chunk 512, and nothing at all below ~318 (sqrt of the count: 0 per chunk, then
torch.stack([]) fails); its final pass also ignores `reverse` (negative mode). We stack each table
once and take one exact top-k for the whole batch, so `chunk_size` only sets how many label texts
are encoded at a time when the cache is built. With exact ranking our modes give the package's
prompts exactly; the package's `chain`, `similarity` and prompt truncation are used as they are.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.pretrained import is_pretrained_cfg
from PIL import Image

from ..errors import SettingError, UserError, debug_enabled
from . import hub
from .captioner import Captioner
from .devices import pick_device, pick_dtype

MODES = ("best", "classic", "fast", "negative", "caption")
MAX_FLAVORS = 32  # the package's default for fast/best/negative chains
CLASSIC_FLAVORS = 3  # the package's default for classic mode
MIN_FLAVORS = 8  # best mode keeps chaining at least this many flavors
TINY_CLIP_ARCH = "tiny-clip"  # the stem of tiny.CLIP_CONFIG_FILE, as open_clip registers it

_OPEN_CLIP_DIR = os.path.dirname(open_clip.__file__)
_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@contextlib.contextmanager
def _hush_open_clip_logs() -> Iterator[None]:
    """open_clip logs its load failures at ERROR on the root logger, which prints them before our
    one-line error says the same; drop its records while it loads (unless VIDEO2DREAM_DEBUG)."""
    if debug_enabled():
        yield
        return
    root = logging.getLogger()

    def not_open_clip(record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(_OPEN_CLIP_DIR)

    root.addFilter(not_open_clip)
    try:
        yield
    finally:
        root.removeFilter(not_open_clip)


@contextlib.contextmanager
def _quiet_autocast() -> Iterator[None]:
    """The package wraps its CLIP calls in torch.cuda.amp.autocast(), which warns on every call
    (deprecated; and 'CUDA is not available' on other devices). Nothing to act on: hush them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*autocast.*")
        warnings.filterwarnings("ignore", message=r".*CUDA is not available.*")
        yield


TABLES = ("artists", "flavors", "mediums", "movements", "trendings", "negative")


def _say_if_building_tables(cache: Path, package_name: str, clip_model: str) -> None:
    """The package embeds ~110k labels when its cache lacks a table (a minute or more, silently):
    say so first. Its files are named after the sanitised model name, as the package names them."""
    stem = package_name.replace("/", "_").replace("@", "_")
    missing = [t for t in TABLES if not (cache / f"{stem}_{t}.safetensors").is_file()]
    if missing:
        from ..progress import say

        say(f"building CLIP Interrogator's label tables for {clip_model} (first use, a minute or more) in {cache}")


class Interrogator:
    """CLIP Interrogator over a batch of frames, with captions supplied by the caller.

    clip_model: "NAME/PRETRAINED" as in clip-interrogator (e.g. "ViT-L-14/openai"), or "tiny:clip".
    captioner: only lent to the package (it wants a caption model); captions are always passed in.
    cache: where label embeddings are cached; default <cache_dir>/clip-interrogator. Files are named
        after the CLIP model (e.g. ViT-L-14_openai_flavors.safetensors, the package's own names, so
        its published caches can be dropped in; tiny-clip_clip-v1-<weights digest>_flavors...).
    """

    def __init__(
        self,
        clip_model: str,
        captioner: Captioner | None,
        device: str = "auto",
        dtype: str = "auto",
        chunk_size: int = 2048,
        flavor_intermediate_count: int = 2048,
        cache: Path | None = None,
    ) -> None:
        from clip_interrogator import Config
        from clip_interrogator import Interrogator as PackageInterrogator

        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise SettingError("interrogate.chunk_size", f"must be a whole number >= 1, got {chunk_size!r}")
        if not isinstance(flavor_intermediate_count, int) or flavor_intermediate_count < 1:
            raise SettingError("interrogate.flavor_intermediate_count",
                               f"must be a whole number >= 1, got {flavor_intermediate_count!r}")
        self.name = clip_model
        self.device: torch.device = pick_device(device)
        self.dtype: torch.dtype = pick_dtype(dtype, self.device)
        self.chunk_size = chunk_size
        # The chains remove one phrase per step and crash when none are left: keep enough.
        self.flavor_intermediate_count = max(flavor_intermediate_count, MAX_FLAVORS + 1)
        self.cache = Path(cache) if cache is not None else hub.cache_dir() / "clip-interrogator"

        arch, pretrained, package_name = self._parse(clip_model)
        with hub.loading("CLIP model", clip_model), _hush_open_clip_logs():
            # With a tag, open_clip fetches the weights through the HF cache (HF_HUB_OFFLINE holds).
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch,
                pretrained=pretrained,
                precision=_PRECISION.get(self.dtype, "fp32"),
                device=self.device,
                jit=False,
            )
            open_clip.get_tokenizer(arch)  # the package's next step; some come from the hub
        self.clip_model = model.eval()
        self.clip_preprocess = preprocess

        config = Config()
        config.clip_model = self.clip_model
        config.clip_preprocess = self.clip_preprocess
        # Only its sanitised form is used: the first part names the tokenizer, the whole the cache.
        config.clip_model_name = package_name
        config.caption_model_name = None  # never let the package load a caption model
        if captioner is not None:
            config.caption_model = captioner.model
            config.caption_processor = captioner.processor
        _say_if_building_tables(self.cache, package_name, clip_model)
        config.cache_path = str(self.cache)
        config.download_cache = False
        config.chunk_size = chunk_size
        config.flavor_intermediate_count = self.flavor_intermediate_count
        config.device = str(self.device)
        config.quiet = True
        with _quiet_autocast(), torch.inference_mode():
            self.ci = PackageInterrogator(config)
        self.tokenize = self.ci.tokenize

        # Each table stacked once, on the device: one matmul ranks the whole batch. Off fp32, the
        # embeddings stay fp16 as the package keeps them (110k x 768 for ViT-L: 170 MB, not 340).
        self._rank_dtype = torch.float32 if self.dtype == torch.float32 else torch.float16
        self._tables: dict[str, tuple[list[str], torch.Tensor]] = {}
        for key in ("artists", "flavors", "mediums", "movements", "trendings", "negative"):
            table = getattr(self.ci, key)
            stacked = np.stack(table.embeds) if len(table.embeds) else np.zeros((0, 1), np.float32)
            table.embeds = stacked  # the same rows, indexable like the package's list; less memory
            tensor = torch.from_numpy(stacked).to(self.device, self._rank_dtype)
            self._tables[key] = (list(table.labels), tensor)

    @staticmethod
    def _parse(clip_model: str) -> tuple[str, str, str]:
        """(open_clip architecture, pretrained tag or weights file, the package's name)."""
        if hub.is_tiny(clip_model):
            if clip_model != "tiny:clip":
                raise UserError(f"'{clip_model}' is not a CLIP model; the tiny one is 'tiny:clip'")
            from .tiny import CLIP_CONFIG_FILE, CLIP_WEIGHTS_FILE

            folder = hub.tiny_model_dir(clip_model)
            config_file = folder / CLIP_CONFIG_FILE
            if open_clip.get_model_config(TINY_CLIP_ARCH) != json.loads(config_file.read_text()):
                open_clip.add_model_config(config_file)  # it rescans every config: only when new
            # The label cache checks only the labels, not the model: name it after the weights,
            # so that a tiny model built by another version of the builder never reuses it.
            weights = folder / CLIP_WEIGHTS_FILE
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
            return TINY_CLIP_ARCH, str(weights), f"{TINY_CLIP_ARCH}/{folder.name}-{digest}"
        arch, sep, pretrained = clip_model.partition("/")
        if not sep or not arch or not pretrained:
            raise SettingError("interrogate.clip_model", f"must look like NAME/PRETRAINED, got '{clip_model}'",
                               "e.g. ViT-L-14/openai")
        # Checked here: open_clip's own errors for these read like download failures.
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SettingError("interrogate.clip_model",
                               f"'{clip_model}': unknown open_clip architecture '{arch}'{hint}")
        pretrained = os.path.expanduser(pretrained)
        if not (is_pretrained_cfg(arch, pretrained) or os.path.isfile(pretrained)):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)[:8]) or "none"
            raise UserError(
                f"'{pretrained}' is neither a pretrained tag of {arch} nor a weights file "
                f"(tags: {tags})"
            )
        # The package splits its name on '/': a weights path must not add more parts.
        return arch, pretrained, f"{arch}/{pretrained.replace('/', '_')}"

    # -- features ------------------------------------------------------------------------------

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Normalised image features in the model's dtype, one forward for the batch."""
        pixels = torch.stack([self.clip_preprocess(im.convert("RGB")) for im in images])
        with torch.inference_mode():
            features = self.clip_model.encode_image(pixels.to(self.device, self.dtype))
            return features / features.norm(dim=-1, keepdim=True)

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """(len(images), D) float32, L2-normalised, on the device."""
        return self._encode_images(images).float()

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) float32, L2-normalised, on the device; over-long texts are cut."""
        tokens = self.tokenize(list(texts)).to(self.device)
        with torch.inference_mode():
            features = self.clip_model.encode_text(tokens).float()
            return features / features.norm(dim=-1, keepdim=True)

    # -- ranking -------------------------------------------------------------------------------

    def _rank(
        self, features: torch.Tensor, keys: tuple[str, ...], count: int, reverse: bool = False
    ) -> list[list[str]]:
        """Per image, the `count` labels of the tables `keys` most (or least) like it; exact."""
        candidates: list[tuple[torch.Tensor, list[str]]] = []  # per table: scores (B, k), labels
        for key in keys:
            labels, embeds = self._tables[key]
            if not labels:
                continue
            sims = (features.to(embeds.dtype) @ embeds.T).float()
            if reverse:
                sims = -sims
            top = sims.topk(min(count, len(labels)), dim=-1)
            candidates.append((top.values, [labels[i] for i in top.indices.flatten().tolist()]))
        if not candidates:
            return [[] for _ in range(features.shape[0])]
        scores = torch.cat([values for values, _ in candidates], dim=1)  # (B, sum k)
        widths = [values.shape[1] for values, _ in candidates]
        ranked: list[list[str]] = []
        for row in range(features.shape[0]):
            pool: list[str] = []
            for (_, labels), width in zip(candidates, widths, strict=True):
                pool.extend(labels[row * width:(row + 1) * width])
            order = scores[row].argsort(descending=True).tolist()
            # A few labels sit in two tables (e.g. 'cinematic'): keep each once.
            ranked.append(list(dict.fromkeys(pool[i] for i in order))[:count])
        return ranked

    # -- the modes -----------------------------------------------------------------------------

    def interrogate(
        self, images: list[Image.Image], captions: list[str], mode: str
    ) -> list[tuple[str, str]]:
        """(prompt, negative_prompt) per image, built on our captions; the package never captions.

        caption:  the caption, "".
        classic:  caption, medium artist, trending, movement, 3 flavors (the package's format), "".
        fast:     caption + the 32 best labels of all tables, cut to CLIP's context, "".
        best:     the most CLIP-similar of caption, classic, fast and a greedy flavor chain, "".
        negative: the caption as prompt; the negative prompt is the package's chain of the labels
                  least like the image (flavors and its negative list).
        Image features are computed for the whole batch in one forward and ranking is batched;
        best and negative then run one greedy chain per image (the slow part: each step encodes
        up to flavor_intermediate_count prompts with CLIP's text tower; their shared token prefix
        is encoded once, see `chain`).
        """
        if mode not in MODES:
            raise UserError(f"unknown interrogate mode '{mode}' (choose from {', '.join(MODES)})")
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        if not images:
            return []
        if mode == "caption":
            return [(caption, "") for caption in captions]

        with _quiet_autocast(), torch.inference_mode():
            features = self._encode_images(images)
            if mode == "negative":
                least = self._rank(
                    features, ("flavors",), self.flavor_intermediate_count, reverse=True
                )
                return [(caption, self._negative(features[i:i + 1], least[i]))
                        for i, caption in enumerate(captions)]
            classic = self._classic(features, captions)
            if mode == "classic":
                return [(prompt, "") for prompt in classic]
            fast = self._fast(features, captions)
            if mode == "fast":
                return [(prompt, "") for prompt in fast]
            return [(prompt, "") for prompt in self._best(features, captions, classic, fast)]

    _MERGED = ("artists", "flavors", "mediums", "movements", "trendings")  # as _merge_tables

    def _classic(self, features: torch.Tensor, captions: list[str]) -> list[str]:
        """The package's interrogate_classic, on precomputed features."""
        from clip_interrogator.clip_interrogator import _truncate_to_fit

        tops = {key: self._rank(features, (key,), 1) for key in ("mediums", "artists", "trendings",
                                                                   "movements")}
        flavors = self._rank(features, ("flavors",), CLASSIC_FLAVORS)
        prompts = []
        for i, caption in enumerate(captions):
            medium, artist, trending, movement = (
                (tops[key][i] or [""])[0]
                for key in ("mediums", "artists", "trendings", "movements")
            )
            flaves = ", ".join(flavors[i])
            if caption.startswith(medium):
                prompt = f"{caption} {artist}, {trending}, {movement}, {flaves}"
            else:
                prompt = f"{caption}, {medium} {artist}, {trending}, {movement}, {flaves}"
            prompts.append(_truncate_to_fit(prompt, self.tokenize))
        return prompts

    def _fast(self, features: torch.Tensor, captions: list[str]) -> list[str]:
        """The package's interrogate_fast, on precomputed features."""
        from clip_interrogator.clip_interrogator import _truncate_to_fit

        ranked = self._rank(features, self._MERGED, MAX_FLAVORS)
        return [_truncate_to_fit(", ".join([caption, *tops]) if caption else ", ".join(tops),
                                 self.tokenize)
                for caption, tops in zip(captions, ranked, strict=True)]

    def _best(
        self, features: torch.Tensor, captions: list[str], classic: list[str], fast: list[str]
    ) -> list[str]:
        """The package's interrogate (best mode), on precomputed features and prompts."""
        ranked = self._rank(features, self._MERGED, self.flavor_intermediate_count)
        prompts = []
        for i, caption in enumerate(captions):
            feature = features[i:i + 1]
            chained = self.chain(
                feature, ranked[i], caption, self.ci.similarity(feature, caption),
                min_count=MIN_FLAVORS, max_count=MAX_FLAVORS,
            )
            candidates = [caption, classic[i], fast[i], chained]
            prompts.append(candidates[int(np.argmax(self.ci.similarities(feature, candidates)))])
        return prompts

    def _negative(self, feature: torch.Tensor, least_like: list[str]) -> str:
        """The package's interrogate_negative, on a precomputed feature and flavor ranking."""
        phrases = least_like + self.ci.negative.labels
        return self.chain(feature, phrases, max_count=MAX_FLAVORS, reverse=True)

    # -- the greedy chain, with the candidates' shared prefix encoded once ---------------------

    def chain(
        self, feature: torch.Tensor, phrases: list[str], best_prompt: str = "", best_sim: float = 0,
        min_count: int = 8, max_count: int = 32, reverse: bool = False,
    ) -> str:
        """The package's `Interrogator.chain`, step for step (the same set, the same order, the
        same similarity calls), except that each step's candidates `curr_prompt, phrase` are
        ranked by `_rank_top`, which encodes their shared token prefix once: CLIP's text tower is
        causal, so the prefix's activations do not depend on what follows it."""
        from clip_interrogator.clip_interrogator import _prompt_at_max_len

        if not self._prefix_ok():
            return self.ci.chain(feature, phrases, best_prompt, best_sim, min_count=min_count,
                                 max_count=max_count, reverse=reverse, desc="Chaining")
        ci = self.ci
        phrases = set(phrases)
        if not best_prompt:
            best_prompt = self._rank_top(feature, [f for f in phrases], reverse=reverse)
            best_sim = ci.similarity(feature, best_prompt)
            phrases.remove(best_prompt)
        curr_prompt, curr_sim = best_prompt, best_sim
        for idx in range(max_count):
            best = self._rank_top(feature, [f"{curr_prompt}, {f}" for f in phrases], reverse=reverse)
            flave = best[len(curr_prompt) + 2:]
            prompt = curr_prompt + ", " + flave
            sim = ci.similarity(feature, prompt)
            if reverse:
                sim = -sim
            if sim > best_sim:
                best_prompt, best_sim = prompt, sim
            if not (sim > curr_sim or idx < min_count):
                break
            curr_prompt, curr_sim = prompt, sim
            if _prompt_at_max_len(curr_prompt, self.tokenize):
                break
            phrases.remove(flave)
        return best_prompt

    def _prefix_ok(self) -> bool:
        """Whether the text tower is open_clip's plain causal transformer (argmax pooling, one
        nn.MultiheadAttention per block), which `_encode_tokens` re-implements."""
        model = self.clip_model
        blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
        return (getattr(model, "text_pool_type", None) == "argmax" and blocks is not None
                and getattr(model, "attn_mask", None) is not None
                and all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention)
                        and not hasattr(b, "ln_1_kv") for b in blocks))

    def _rank_top(self, feature: torch.Tensor, texts: list[str], reverse: bool = False) -> str:
        """As the package's rank_top: the text most (or least) like the image."""
        tokens = self.tokenize(texts).to(self.device)
        sims = []
        for start in range(0, len(texts), self.chunk_size):
            features = self._encode_tokens(tokens[start:start + self.chunk_size])
            features = features / features.norm(dim=-1, keepdim=True)
            sims.append((features @ feature.to(features.dtype).T)[:, 0].float())
        similarity = torch.cat(sims)
        if reverse:
            similarity = -similarity
        return texts[int(similarity.argmax().item())]

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """encode_text(tokens), unnormalised, with the rows' common token prefix run once."""
        import torch.nn.functional as F

        model = self.clip_model
        eot = tokens.argmax(dim=-1)  # the pooled position: the end token has the highest id
        end = int(eot.max()) + 1  # nothing after the last end token reaches a pooled position
        same = (tokens[:, :end] == tokens[:1, :end]).all(dim=0).long().cumprod(0)
        p = max(1, min(int(same.sum()), int(eot.min())))  # shared, and short of every end token
        n, s = tokens.shape[0], end - p
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens[:, :end]).to(cast) + model.positional_embedding[:end].to(cast)
        xp, xs = x[:1, :p], x[:, p:end]
        mask = torch.ones(s, p + s, dtype=torch.bool, device=x.device).tril(diagonal=p)
        for block in model.transformer.resblocks:
            qp, kp, vp = _heads(block, xp)
            qs, ks, vs = _heads(block, xs)
            op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
            keys = torch.cat([kp.expand(n, -1, -1, -1), ks], dim=2)
            values = torch.cat([vp.expand(n, -1, -1, -1), vs], dim=2)
            os_ = F.scaled_dot_product_attention(qs, keys, values, attn_mask=mask)
            xp, xs = _block_rest(block, xp, op), _block_rest(block, xs, os_)
        pooled = model.ln_final(xs)[torch.arange(n, device=xs.device), eot - p]
        projection = model.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


def _heads(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v of an open_clip ResidualAttentionBlock for x (B, T, D), each (B, heads, T, D/heads)."""
    import torch.nn.functional as F

    attn = block.attn
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return tuple(t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in qkv)


def _block_rest(block: torch.nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """The rest of the block after attention: out projection, residual, MLP, residual."""
    import torch.nn.functional as F

    attn = block.attn
    x = x + block.ls_1(F.linear(attended.transpose(1, 2).flatten(-2), attn.out_proj.weight,
                                attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
