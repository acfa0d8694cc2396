"""Models loaded at most once per command, on first use, and shared by the stages that need them.

A stage called without a cache loads its models as before (and drops them when it returns). The
telephone game passes one cache to every round and step, so BLIP, CLIP and SDXL load once each.
A model is loaded again only if the settings it depends on change (the old one is dropped first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..settings import Settings
    from .captioner import Captioner
    from .interrogator import Interrogator
    from .painter import Painter


class ClipFeatures:
    """Just the open_clip model, for similarities: no label tables (which take long to build).
    The same loading as the interrogator's (tiny:clip, NAME/PRETRAINED, a weights file)."""

    def __init__(self, clip_model: str, device: str = "auto", dtype: str = "auto") -> None:
        import open_clip

        from . import hub
        from .devices import pick_device, pick_dtype
        from .interrogator import _PRECISION, Interrogator, _hush_open_clip_logs

        self.name = clip_model
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        arch, pretrained, _ = Interrogator._parse(clip_model)
        with hub.loading("CLIP model", clip_model), _hush_open_clip_logs():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, precision=_PRECISION.get(self.dtype, "fp32"),
                device=self.device, jit=False)
            self.tokenize = open_clip.get_tokenizer(arch)
        self.clip_model = model.eval()
        self.clip_preprocess = preprocess

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """(len(images), D) float32, L2-normalised."""
        import torch

        pixels = torch.stack([self.clip_preprocess(im.convert("RGB")) for im in images])
        with torch.inference_mode():
            features = self.clip_model.encode_image(pixels.to(self.device, self.dtype)).float()
            return features / features.norm(dim=-1, keepdim=True)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) float32, L2-normalised; over-long texts are cut to CLIP's context."""
        import torch

        tokens = self.tokenize(list(texts)).to(self.device)
        with torch.inference_mode():
            features = self.clip_model.encode_text(tokens).float()
            return features / features.norm(dim=-1, keepdim=True)


class ModelCache:
    def __init__(self) -> None:
        self._models: dict[str, tuple[Any, Any]] = {}  # role -> (settings key, model)

    def _get(self, role: str, key: Any, make) -> Any:
        held = self._models.get(role)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            del self._models[role]
            from .devices import free_memory

            del held
            free_memory()
        model = make()
        self._models[role] = (key, model)
        return model

    @staticmethod
    def _reachable(*models: tuple[str, str | None]) -> None:
        """Before the long imports and loads: a model to download from a hub that does not answer
        says so at once (hub.loading checks again, for models loaded without this cache)."""
        from . import hub

        for kind, name in models:
            if name:
                hub.check_hub_reachable(kind, name)

    def captioner(self, settings: Settings) -> Captioner:
        i = settings.interrogate
        self._reachable(("caption model", i.caption_model))
        from .captioner import Captioner

        key = (i.caption_model, settings.device, settings.dtype)
        captioner = self._get("captioner", key, lambda: Captioner(i.caption_model, settings.device, settings.dtype))
        captioner.check_lengths(i.min_length, i.max_length)
        return captioner

    def interrogator(self, settings: Settings) -> Interrogator:
        i = settings.interrogate
        self._reachable(("caption model", i.caption_model), ("CLIP model", i.clip_model))
        from .interrogator import Interrogator

        captioner = self.captioner(settings)
        key = (i.clip_model, i.chunk_size, i.flavor_intermediate_count, id(captioner), settings.device,
               settings.dtype)
        return self._get("interrogator", key, lambda: Interrogator(
            i.clip_model, captioner, settings.device, settings.dtype, chunk_size=i.chunk_size,
            flavor_intermediate_count=i.flavor_intermediate_count))

    def clip(self, settings: Settings) -> Interrogator | ClipFeatures:
        """Something with image_features / text_features: the interrogator's CLIP when it is
        loaded with the same model, else the bare CLIP model."""
        i = settings.interrogate
        held = self._models.get("interrogator")
        if held is not None and held[1].name == i.clip_model:
            return held[1]
        key = (i.clip_model, settings.device, settings.dtype)
        self._reachable(("CLIP model", i.clip_model))
        return self._get("clip", key, lambda: ClipFeatures(i.clip_model, settings.device, settings.dtype))

    def painter(self, settings: Settings) -> Painter:
        g = settings.generate
        from .controlnet import control_module

        module, control = control_module(g.controlnet) if g.controlnet else (None, None)
        depth = g.depth_model if module == "depth" else None
        self._reachable(("SDXL model", g.model), ("VAE", g.vae), ("preview VAE", g.preview_vae),
                        ("SDXL refiner", g.refiner), ("ControlNet", control), ("depth model", depth))
        from .painter import Painter

        adapter = (g.ip_adapter, g.ip_adapter_subfolder, g.ip_adapter_weight) if g.style_image else None
        key = (g.model, g.scheduler, g.lora, g.vae, g.preview_vae, g.compile, g.refiner, g.prompt_weighting,
               g.controlnet, depth, settings.device, settings.dtype, adapter)
        return self._get("painter", key, lambda: Painter(
            g.model, settings.device, settings.dtype, scheduler=g.scheduler, lora=g.lora, vae=g.vae,
            preview_vae=g.preview_vae, compile=g.compile, refiner=g.refiner, prompt_weighting=g.prompt_weighting,
            controlnet=g.controlnet, depth_model=depth, ip_adapter=adapter))

    def clear(self) -> None:
        from .devices import free_memory

        self._models.clear()
        free_memory()
