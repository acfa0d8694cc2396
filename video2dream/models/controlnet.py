"""ControlNet's control images: what of the source frame the dream keeps (its edges, its depth).

--controlnet canny | depth | MODULE:ID_OR_PATH | ID_OR_PATH: the module makes the control image from
the frame (canny: OpenCV's edges; depth: a depth estimator, --depth-model), the model is the SDXL
ControlNet trained on such images. A bare ID_OR_PATH is a canny ControlNet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

MODULES = ("canny", "depth")
DEFAULT_MODELS = {"canny": "diffusers/controlnet-canny-sdxl-1.0", "depth": "diffusers/controlnet-depth-sdxl-1.0"}
# OpenCV's hysteresis thresholds, as A1111's ControlNet extension and diffusers' examples use them
CANNY_LOW, CANNY_HIGH = 100, 200


def control_module(spec: str) -> tuple[str, str]:
    """'canny' -> ('canny', its default model); 'depth:ID' -> ('depth', 'ID'); 'ID' -> ('canny', 'ID')."""
    if spec in MODULES:
        return spec, DEFAULT_MODELS[spec]
    head, sep, tail = spec.partition(":")
    if sep and head in MODULES and tail:
        return head, tail
    return "canny", spec


def canny(image: Image.Image) -> Image.Image:
    """White edges on black, three channels (the ControlNet reads RGB)."""
    import cv2
    import numpy as np
    from PIL import Image

    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, CANNY_LOW, CANNY_HIGH)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


class DepthEstimator:
    """A transformers depth model (DPT, Depth Anything...): near is bright, as the depth ControlNets
    were trained (MiDaS's inverse depth, scaled to 0-255 per picture)."""

    def __init__(self, name: str, device: Any, dtype: Any) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        from . import hub

        with hub.loading("depth model", name):
            source = hub.resolve(name)
            self.processor = AutoImageProcessor.from_pretrained(source)
            self.model = AutoModelForDepthEstimation.from_pretrained(source).to(device, dtype).eval()
        self.device, self.dtype = device, dtype

    def __call__(self, image: Image.Image) -> Image.Image:
        import numpy as np
        import torch
        from PIL import Image

        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device, self.dtype)
        with torch.inference_mode():
            depth = self.model(**inputs).predicted_depth.float()
        depth = torch.nn.functional.interpolate(depth[:, None], size=image.size[::-1], mode="bicubic")[0, 0]
        low, high = depth.min(), depth.max()
        depth = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        gray = (depth.clamp(0, 1) * 255).round().byte().cpu().numpy()
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
