"""The interrogator's chain (candidates' shared token prefix encoded once) gives the package's prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interrogator():
    from video2dream.models.cache import ModelCache
    from video2dream.settings import resolve

    return ModelCache().interrogator(resolve(preset="tiny"))


def test_prefix_encoder_matches_encode_text(interrogator) -> None:
    it = interrogator
    assert it._prefix_ok()
    texts = ["a dog on a beach, sunny, by claude monet", "a dog on a beach, sunny, (trending)",
             "a dog on a beach, sunny", "a dog on a beach, sunny, " + "very " * 40]  # the last is cut
    tokens = it.tokenize(texts)
    with torch.inference_mode():
        ours, theirs = it._encode_tokens(tokens), it.clip_model.encode_text(tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_chains_give_the_package_prompts(interrogator, seed: int) -> None:
    it = interrogator
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    with torch.inference_mode():
        feature = it._encode_images([image])
        flavors = it._rank(feature, it._MERGED, 400)[0]
        caption = "a picture of a dog"
        sim = it.ci.similarity(feature, caption)
        assert it.chain(feature, flavors, caption, sim, min_count=4, max_count=12) == \
            it.ci.chain(feature, flavors, caption, sim, min_count=4, max_count=12)
        least = it._rank(feature, ("flavors",), 400, reverse=True)[0] + it.ci.negative.labels
        assert it.chain(feature, least, max_count=12, reverse=True) == \
            it.ci.chain(feature, least, max_count=12, reverse=True)
