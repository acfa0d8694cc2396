"""BLIP captions and CLIP Interrogator on the tiny models (built and cached on first use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video2dream.errors import UserError
from video2dream.models import hub

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("clip_interrogator")

from video2dream.models import tiny  # noqa: E402
from video2dream.models.captioner import Captioner  # noqa: E402
from video2dream.models.interrogator import MODES, Interrogator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABEL_TABLES = ("artists", "flavors", "mediums", "movements", "trendings", "negative")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Different sizes and modes: noise, a flat colour, greyscale, and RGBA."""
    noise = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype("uint8"))
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 2, dtype="uint8"), (64, 1)), mode="L")
    return [noise, Image.new("RGB", (64, 48), (220, 30, 30)), gradient,
            Image.new("RGBA", (50, 70), (10, 200, 90, 128))]


@pytest.fixture(scope="module")
def captioner() -> Captioner:
    return Captioner("tiny:blip")


@pytest.fixture(scope="module")
def captions(captioner: Captioner, images: list[Image.Image]) -> list[str]:
    return captioner.caption(images, min_length=5, max_length=12, num_beams=2)


@pytest.fixture(scope="module")
def interrogator(captioner: Captioner) -> Interrogator:
    # A small intermediate count keeps the best/negative chains quick on a CPU.
    return Interrogator("tiny:clip", captioner, flavor_intermediate_count=64)


def _files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.parametrize("builder", [tiny.build_tiny_blip, tiny.build_tiny_clip])
def test_tiny_build_is_deterministic(builder, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        builder(folder)
    a, b = _files(first), _files(second)
    assert a.keys() == b.keys()
    weights = [name for name in a if name.endswith(".safetensors")]
    assert weights
    for name in weights:
        sa, sb = load_file(a[name]), load_file(b[name])
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for name in a.keys() - set(weights):
        assert a[name].read_bytes() == b[name].read_bytes(), name


def test_captioner_batch(captioner: Captioner, images: list[Image.Image],
                         captions: list[str]) -> None:
    assert len(captions) == len(images)
    for caption in captions:
        assert isinstance(caption, str) and caption.strip()
        assert caption == " ".join(caption.split())
        assert "[" not in caption  # special tokens stripped
    assert captioner.caption([]) == []
    assert captioner.caption(images, min_length=5, max_length=12, num_beams=2) == captions


def test_captioner_knobs(captioner: Captioner, images: list[Image.Image]) -> None:
    def count(text: str) -> int:
        return len(captioner.processor.tokenizer(text, add_special_tokens=False).input_ids)

    # Lengths count the start token, which is stripped.
    short = captioner.caption(images, min_length=2, max_length=5, num_beams=1)
    long = captioner.caption(images, min_length=20, max_length=24, num_beams=3,
                             no_repeat_ngram_size=1)
    assert all(1 <= count(text) <= 4 for text in short)
    assert all(19 <= count(text) <= 23 for text in long)
    for text in long:  # no_repeat_ngram_size=1: no token twice
        ids = captioner.processor.tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("mode", MODES)
def test_interrogate_modes(interrogator: Interrogator, images: list[Image.Image],
                           captions: list[str], mode: str) -> None:
    results = interrogator.interrogate(images, captions, mode)
    assert len(results) == len(images)
    for caption, (prompt, negative) in zip(captions, results, strict=True):
        assert isinstance(prompt, str) and isinstance(negative, str)
        if mode == "caption":
            assert (prompt, negative) == (caption, "")
        elif mode == "negative":
            assert prompt == caption
            assert negative.strip() and negative != caption
        else:
            # every candidate of these modes starts from the caption and adds labels
            assert prompt.startswith(caption)
            assert negative == ""
    if mode in ("classic", "fast"):
        prompts = [prompt for prompt, _ in results]
        assert prompts != captions  # labels were added


def test_interrogate_checks(interrogator: Interrogator, images: list[Image.Image]) -> None:
    assert interrogator.interrogate([], [], "fast") == []
    with pytest.raises(UserError, match="mode"):
        interrogator.interrogate(images[:1], ["x"], "slow")
    with pytest.raises(ValueError):
        interrogator.interrogate(images[:2], ["x"], "fast")


def test_features(interrogator: Interrogator, images: list[Image.Image]) -> None:
    image = interrogator.image_features(images)
    text = interrogator.text_features(["a dog", "a red square", "a grey gradient"])
    assert image.shape == (len(images), text.shape[1])
    assert text.shape[0] == 3
    assert image.dtype == text.dtype == torch.float32
    for features in (image, text):
        assert torch.allclose(features.norm(dim=-1), torch.ones(len(features)), atol=1e-4)
    # one batch or one at a time: the same features
    single = torch.cat([interrogator.image_features([im]) for im in images])
    assert torch.allclose(image, single, atol=1e-5)


def test_small_chunk_size_still_ranks(interrogator: Interrogator, images: list[Image.Image],
                                      captions: list[str]) -> None:
    """The package's chunked LabelTable.rank keeps int(chunk / num_chunks) labels per chunk: 0 for
    a chunk this small. Our ranking is exact and does not depend on chunk_size."""
    small = Interrogator("tiny:clip", None, chunk_size=64, flavor_intermediate_count=64)
    for mode in ("classic", "fast", "negative"):
        assert small.interrogate(images, captions, mode) == \
            interrogator.interrogate(images, captions, mode)


def test_label_embeddings_cached(interrogator: Interrogator) -> None:
    folder = hub.cache_dir() / "clip-interrogator"
    # named after the CLIP model (tiny version and weights digest), so models never share a file
    prefix = f"tiny-clip_{hub.tiny_model_dir('tiny:clip').name}-"
    files = [f for f in folder.glob(f"{prefix}*.safetensors") if f.stem.endswith(LABEL_TABLES)]
    assert sorted(f.stem.rsplit("_", 1)[1] for f in files) == sorted(LABEL_TABLES)
    before = [f.stat().st_mtime_ns for f in files]
    again = Interrogator("tiny:clip", None)
    assert [f.stat().st_mtime_ns for f in files] == before  # loaded, not recomputed
    assert len(again.ci.flavors.labels) == len(interrogator.ci.flavors.labels) > 100_000


def test_unknown_models_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as caught:
        Captioner("nobody/no-such-model")
    message = str(caught.value)
    assert "nobody/no-such-model" in message and "\n" not in message
    for name, expected in [("nobody/no-such-model", "architecture"),
                           ("ViT-B-32/no-such-tag", "no-such-tag"),
                           ("ViT-B-32", "NAME/PRETRAINED"),
                           ("tiny:blip", "tiny:clip")]:
        with pytest.raises(UserError, match=expected) as caught:
            Interrogator(name, None)
        assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="does not exist"):
        Captioner("./no/such/folder")
