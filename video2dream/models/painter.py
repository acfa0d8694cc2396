"""The painter: one SDXL pipeline, loaded once, turning prompts (and optionally frames) into images.

A frame's image depends only on its own prompt, negative prompt and seed: each image gets its own
CPU random generator, so its starting noise (and an ancestral sampler's noise) is the same whether
it is painted alone or in a batch, on any device. The same call gives the same pixels again; in
another batch a few pixels may differ by a level or so, because matrix kernels sum in an order
that depends on the batch's size and layout (CPUs and GPUs alike): invisible, but not bit-exact.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import SettingError, UserError
from . import devices, hub
from .sizes import generation_size  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from PIL import Image

# A1111 sampler name -> (diffusers scheduler class, config overrides). "... Karras" variants add
# use_karras_sigmas=True (see _scheduler_spec).
A1111_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DPM++ 2S": ("DPMSolverSinglestepScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "PLMS": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
_KARRAS_OK = {"Euler", "Heun", "LMS", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE",
              "DPM++ 2S", "UniPC", "DEIS"}

_TINY_NAME = re.compile(r"[^\w.\-]+")


def parse_lora(spec: str) -> tuple[str, float]:
    """'ID_OR_PATH[:SCALE]' -> (source, scale); a Windows drive 'C:\\...' is not a scale."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def _scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    """A diffusers class name or an A1111 sampler name -> (class name, config overrides)."""
    if name in A1111_SAMPLERS:
        return A1111_SAMPLERS[name]
    if name.endswith(" Karras") and name[: -len(" Karras")] in _KARRAS_OK:
        cls, extra = A1111_SAMPLERS[name[: -len(" Karras")]]
        return cls, {**extra, "use_karras_sigmas": True}
    return name, {}


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """from_pretrained's dtype argument: `dtype` in newer diffusers (torch_dtype is deprecated)."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Hide diffusers' per-call warnings (img2img's VAE upcast warns on every batch; prompts over
    77 tokens are reported by token_limit instead)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    # transformers' tokenizer warns of sequences over 77 tokens on every call, too.
    dlog.set_verbosity(max(levels[0], dlog.ERROR))
    tlog.set_verbosity(max(levels[1], tlog.ERROR))
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])


def _offline_quiet() -> contextlib.AbstractContextManager:
    """Offline, diffusers warns "Couldn't connect to the Hub ... will try the cache" before each
    load from the hub: noise, as a model missing from the cache fails in one line of our own."""
    return _quiet_diffusers() if hub.offline() else contextlib.nullcontext()


@contextlib.contextmanager
def _hushed_load_bars(local: bool) -> Iterator[None]:
    """diffusers and transformers draw a bar per pipeline and per weights file while loading, even
    for a tiny local model: hide them for local folders (a hub download keeps its bars)."""
    if not local:
        yield
        return
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def _scheduler_class(name: str) -> tuple[Any, dict[str, Any]]:
    """The diffusers scheduler class (and config overrides) for a class or A1111 sampler name."""
    import diffusers

    cls_name, overrides = _scheduler_spec(name.strip())
    cls = getattr(diffusers, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        valid = ("EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, "
                 "DPMSolverMultistepScheduler, UniPCMultistepScheduler, DDIMScheduler")
        raise SettingError(
            "generate.scheduler", f"{{generate.scheduler}}: unknown scheduler '{name}'",
            f"give a diffusers scheduler class ({valid}, ...) "
            f"or an A1111 sampler name ({', '.join(list(A1111_SAMPLERS)[:6])}, ...)")
    return cls, overrides


def _check_lora(spec: str) -> None:
    """Fail fast on what can be checked without the model: the file, the peft package."""
    source, _scale = parse_lora(spec)
    path = Path(source).expanduser()
    looks_local = path.suffix in (".safetensors", ".bin", ".pt", ".ckpt") or source.startswith(
        (".", "/", "~")) or len(path.parts) > 2
    if looks_local and not path.exists():
        raise SettingError("generate.lora", f"{spec}: there is no file or folder {source}")
    from diffusers.utils import is_peft_available

    if not is_peft_available():
        raise SettingError("generate.lora", "needs the peft package", "pip install peft")


def short_name(model: str) -> str:
    """A model's short name for A1111's text: the hub id, a folder's or file's name."""
    if hub.is_tiny(model):
        return _TINY_NAME.sub("-", model)  # "tiny-sdxl": no colon to quote
    path = Path(model)
    if path.is_file():
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return model


class Painter:
    """An SDXL text-to-image (and image-to-image) painter around one loaded pipeline."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto",
                 scheduler: str | None = None, lora: str | None = None,
                 vae: str | None = None, preview_vae: str | None = None, compile: bool = False,
                 tune: bool | None = None, refiner: str | None = None, prompt_weighting: str | None = None,
                 controlnet: str | None = None, depth_model: str | None = None,
                 ip_adapter: tuple[str, str, str] | None = None, components: dict[str, Any] | None = None) -> None:
        """preview_vae: an AutoencoderTiny (TAESD, e.g. madebyollin/taesdxl) decodes instead of
        the model's VAE: much faster, a little softer. compile: torch.compile the UNet (the first
        batch, and each new batch size or image size, pays the compile). tune: channels_last and
        fused QKV projections; None means on CUDA only (measured: no gain on the CPU).
        refiner: an SDXL refiner that finishes the base's latents (sharing its VAE and second text
        encoder). prompt_weighting "a1111": prompts whole, in 75-token chunks, with A1111's weights.
        controlnet: canny, depth or [MODULE:]ID_OR_PATH (models/controlnet.py); depth_model: the
        depth estimator of the depth module. components: the SDXL pipeline's parts, made by the caller
        (unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler: a test's
        get_dummy_components, as diffusers' own tests do); then model is only the name it shows."""
        import torch  # noqa: F401  (fail here, not halfway, if torch is broken)
        from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionXLPipeline

        self.model = model
        self.lora: tuple[str, float] | None = None  # (source, scale) once fused
        self.device = devices.pick_device(device)
        self.dtype = devices.pick_dtype(dtype, self.device)
        # Check what can be checked before the long model load.
        if scheduler:
            _scheduler_class(scheduler)
        if lora:
            _check_lora(lora)
        if vae and preview_vae:
            raise SettingError("generate.vae", "give {generate.vae} or {generate.preview_vae}, not both",
                               "none turns one off", also=("generate.preview_vae",))
        source = hub.resolve(model) if components is None else model
        kwargs: dict[str, Any] = _dtype_kwargs(self.dtype)
        if vae:
            with hub.loading("VAE", vae), _hushed_load_bars(hub.is_tiny(vae) or Path(vae).exists()):
                vae_source = hub.resolve(vae)
                # A whole pipeline folder given as the VAE: take its vae/ part.
                whole = (Path(vae_source) / "vae" / "config.json").is_file()
                sub = {"subfolder": "vae"} if whole else {}
                kwargs["vae"] = AutoencoderKL.from_pretrained(
                    vae_source, **_dtype_kwargs(self.dtype), **sub)
        if preview_vae:
            with hub.loading("preview VAE", preview_vae), \
                    _hushed_load_bars(hub.is_tiny(preview_vae) or Path(preview_vae).exists()), \
                    _quiet_diffusers():  # its saved config lists keys its __init__ ignores
                kwargs["vae"] = AutoencoderTiny.from_pretrained(
                    hub.resolve(preview_vae), **_dtype_kwargs(self.dtype))
        quiet = _quiet_diffusers() if preview_vae else _offline_quiet()  # "expected KL"
        with hub.loading("SDXL model", model), _hushed_load_bars(Path(source).exists()), quiet:
            if components is not None:
                pipe = StableDiffusionXLPipeline(**{**components, **{k: v for k, v in kwargs.items() if k == "vae"}})
                pipe = pipe.to(dtype=self.dtype)
            elif Path(source).is_file():  # an A1111 / ComfyUI checkpoint file (.safetensors)
                pipe = StableDiffusionXLPipeline.from_single_file(source, **kwargs)
            else:
                pipe = StableDiffusionXLPipeline.from_pretrained(source, **kwargs)
        pipe.set_progress_bar_config(disable=True)  # the generate stage shows its own progress
        if scheduler:
            pipe.scheduler = self._make_scheduler(pipe, scheduler)
        if lora:
            self._load_lora(pipe, lora)
        if ip_adapter:  # (id or folder, subfolder, weight): the style image's adapter (models/ip_adapter.py)
            from .ip_adapter import load_ip_adapter

            load_ip_adapter(pipe, *ip_adapter)
        self.ip_adapter = ip_adapter
        self.style_image: Any = None  # set_style: the image every call of a batch takes its look from
        self.pipe = pipe.to(self.device)
        self.tuned = self.device.type == "cuda" if tune is None else tune
        if self.tuned:
            self._tune(pipe)
        if compile:
            pipe.unet = torch.compile(pipe.unet)
        self._img2img: Any = None
        self._control_pipes: dict[bool, Any] = {}  # img2img? -> the ControlNet pipeline
        self.refiner_name = refiner
        self.refiner = self._load_refiner(refiner, scheduler) if refiner else None
        self.control_module, self.controlnet, self.depth = self._load_controlnet(controlnet, depth_model)
        self.prompt_weighting = prompt_weighting if prompt_weighting not in (None, "none") else None
        self._encoders: dict[str, Any] = {}
        # For tests and benchmarks: when a list, each denoising step appends (which pipeline, timestep).
        self.trace: list[tuple[str, int]] | None = None

    # -- set-up --------------------------------------------------------------------------------

    @staticmethod
    def _make_scheduler(pipe: Any, name: str) -> Any:
        cls, overrides = _scheduler_class(name)
        try:
            return cls.from_config(pipe.scheduler.config, **overrides)
        except (ImportError, ValueError, TypeError) as e:  # e.g. DPM++ SDE needs torchsde
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot use scheduler '{name}' with this model: {detail}") from e

    def _load_lora(self, pipe: Any, spec: str) -> None:
        source, scale = parse_lora(spec)
        path = Path(source).expanduser()
        with hub.loading("LoRA", source):
            if path.is_file():  # a single .safetensors file, as A1111 keeps them
                pipe.load_lora_weights(str(path.parent), weight_name=path.name,
                                       adapter_name="lora")
            else:
                pipe.load_lora_weights(str(path) if path.exists() else source,
                                       adapter_name="lora")
            # Fused into the weights: no per-step LoRA cost, and the scale applies everywhere.
            pipe.fuse_lora(lora_scale=scale)
        self.lora = (source, scale)

    def _load_refiner(self, refiner: str, scheduler: str | None) -> Any:
        """The refiner's UNet (and tokenizer), with the base's VAE and second text encoder, as
        stabilityai's refiner shares them; the sampler chosen for the base."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        local = hub.is_tiny(refiner) or Path(refiner).exists()
        with hub.loading("SDXL refiner", refiner), _hushed_load_bars(local), _offline_quiet():
            source = hub.resolve(refiner)
            shared = {"vae": self.pipe.vae, "text_encoder_2": self.pipe.text_encoder_2}
            if Path(source).is_file():
                pipe = StableDiffusionXLImg2ImgPipeline.from_single_file(source, **shared, **_dtype_kwargs(self.dtype))
            else:
                pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(source, **shared, **_dtype_kwargs(self.dtype))
        if pipe.text_encoder is not None or not pipe.config.requires_aesthetics_score:
            raise UserError(f"'{refiner}' is not an SDXL refiner (it has a first text encoder or no aesthetic "
                            "score); give stabilityai/stable-diffusion-xl-refiner-1.0 or one like it")
        pipe.set_progress_bar_config(disable=True)
        if scheduler:
            pipe.scheduler = self._make_scheduler(pipe, scheduler)
        if self.tuned:
            self._tune(pipe)
        return pipe.to(self.device)

    def _load_controlnet(self, spec: str | None, depth_model: str | None) -> tuple[str | None, Any, Any]:
        """(module, ControlNetModel, depth estimator or None) for --controlnet; Nones without."""
        if not spec:
            return None, None, None
        from diffusers import ControlNetModel

        from .controlnet import DepthEstimator, control_module

        module, name = control_module(spec)
        local = hub.is_tiny(name) or Path(name).exists()
        with hub.loading("ControlNet", name), _hushed_load_bars(local), _offline_quiet():
            net = ControlNetModel.from_pretrained(hub.resolve(name), **_dtype_kwargs(self.dtype))
        depth = None
        if module == "depth":
            model = depth_model or "Intel/dpt-hybrid-midas"
            with _hushed_load_bars(hub.is_tiny(model) or Path(model).exists()), _offline_quiet():
                depth = DepthEstimator(model, self.device, self.dtype)
        return module, net.to(self.device), depth

    @staticmethod
    def _tune(pipe: Any) -> None:
        """channels_last for the convolutions, one fused QKV matmul per attention layer (the VAE's
        too when it is an AutoencoderKL: the tiny preview VAE has no attention)."""
        import torch

        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.unet.fuse_qkv_projections()
        if hasattr(pipe.vae, "fuse_qkv_projections"):
            pipe.vae.fuse_qkv_projections()

    # -- facts for metadata --------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """A short name for A1111's `Model:` field: the hub id, a folder's or file's name."""
        return short_name(self.model)

    @property
    def sampler_name(self) -> str:
        """A1111's sampler name ("Euler a", "DPM++ 2M Karras"...), else the scheduler class."""
        config = self.pipe.scheduler.config
        cls_name = type(self.pipe.scheduler).__name__
        for a1111, (name, overrides) in A1111_SAMPLERS.items():
            if name == cls_name and all(config.get(k) == v for k, v in overrides.items()):
                karras = config.get("use_karras_sigmas") and a1111 in _KARRAS_OK
                return f"{a1111} Karras" if karras else a1111
        return cls_name

    def token_limit(self, prompt: str) -> tuple[str, str]:
        """(what the text encoders see, what the 77-token limit cuts off); together: prompt."""
        tok = self.pipe.tokenizer
        room = tok.model_max_length - 2  # <|startoftext|> and <|endoftext|> take two
        enc = tok(prompt, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                  verbose=False)
        if len(enc.input_ids) <= room:
            return prompt, ""
        # End after the last token seen, unless the first token cut starts inside the same
        # character (one character can be several byte-level tokens): then it counts as cut.
        end = min(enc.offset_mapping[room - 1][1], enc.offset_mapping[room][0])
        return prompt[:end], prompt[end:]

    # -- painting ------------------------------------------------------------------------------

    def set_style(self, image: Any, scale: float | None) -> None:
        """The style image (and its weight) of the next calls: with an IP-Adapter loaded, one is needed."""
        if image is not None and not self.ip_adapter:
            raise ValueError("a style image needs a painter loaded with an IP-Adapter")
        self.style_image = image
        if image is not None:
            self.pipe.set_ip_adapter_scale(float(scale if scale is not None else 0.6))

    def _style_args(self) -> dict[str, Any]:
        return {"ip_adapter_image": self.style_image} if self.style_image is not None else {}

    def _shared(self) -> dict[str, Any]:
        return dict(force_zeros_for_empty_prompt=self.pipe.config.force_zeros_for_empty_prompt,
                    add_watermarker=getattr(self.pipe, "watermark", None) is not None)

    @property
    def img2img(self) -> Any:
        """The image-to-image pipeline, made on first use from the same loaded modules."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            self._img2img = StableDiffusionXLImg2ImgPipeline(**self.pipe.components, **self._shared())
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def control_pipe(self, img2img: bool) -> Any:
        """The ControlNet pipeline (text or image to image), made on first use from the same modules."""
        if img2img not in self._control_pipes:
            from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetPipeline

            cls = StableDiffusionXLControlNetImg2ImgPipeline if img2img else StableDiffusionXLControlNetPipeline
            pipe = cls(**self.pipe.components, controlnet=self.controlnet, **self._shared())
            pipe.set_progress_bar_config(disable=True)
            self._control_pipes[img2img] = pipe
        return self._control_pipes[img2img]

    def control_images(self, frames: list[Image.Image], width: int, height: int) -> list[Image.Image]:
        """The ControlNet's images, made from the frames at the dream's size (edges or depth)."""
        from PIL import Image

        from .controlnet import canny

        sized = [im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
                 if im.size != (width, height) or im.mode != "RGB" else im for im in frames]
        make = self.depth if self.control_module == "depth" else canny
        return [make(im) for im in sized]

    def _encoder(self, part: str) -> Any:
        """compel's encoder for the base (both text encoders) or the refiner (the second alone)."""
        if part not in self._encoders:
            from .prompts import WeightedEncoder

            pipe = self.pipe if part == "base" else self.refiner
            tokenizers = [t for t in (pipe.tokenizer, pipe.tokenizer_2) if t is not None]
            encoders = [e for e in (pipe.text_encoder, pipe.text_encoder_2) if e is not None]
            self._encoders[part] = WeightedEncoder(tokenizers, encoders, self.dtype)
        return self._encoders[part]

    def _text_groups(self, prompts: list[str], negatives: list[str]) -> list[tuple[list[int], dict, dict]]:
        """[(indices, the base's text arguments, the refiner's)]: the whole batch as strings, or, with
        prompt weighting, embeddings in groups of one length (a unit's length is its own: padding it to
        its batch's longest prompt would change its picture)."""
        if not self.prompt_weighting:
            text = {"prompt": list(prompts), "negative_prompt": list(negatives)}
            return [(list(range(len(prompts))), text, text)]
        from .prompts import stack

        parts = ["base", "refiner"] if self.refiner is not None else ["base"]
        pairs = [[self._encoder(part).pair(p, n) for part in parts] for p, n in zip(prompts, negatives, strict=True)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, pair in enumerate(pairs):
            groups.setdefault(tuple(p["prompt_embeds"].shape[1] for p in pair), []).append(i)
        out = []
        for indices in groups.values():
            base = stack([pairs[i][0] for i in indices])
            refine = stack([pairs[i][1] for i in indices]) if self.refiner is not None else {}
            out.append((indices, base, refine))
        return out

    def _tracer(self, name: str) -> dict[str, Any]:
        if self.trace is None:
            return {}
        trace = self.trace

        def record(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            trace.append((name, int(timestep)))
            return kwargs

        return {"callback_on_step_end": record}

    def paint(self, prompts: list[str], negative_prompts: list[str], seeds: list[int],
              width: int, height: int, steps: int, guidance: float,
              strength: float | None = None,
              init_images: list[Image.Image] | None = None,
              control_frames: list[Image.Image] | None = None, control_scale: float = 0.5,
              refiner_switch: float = 0.8) -> list[Image.Image]:
        """One pipeline call for the whole batch (one per prompt length with prompt weighting);
        image i depends only on prompts[i], negative_prompts[i], seeds[i] (and init_images[i],
        control_frames[i]: the frames the ControlNet's images are made from)."""
        import torch

        n = len(prompts)
        if not (len(negative_prompts) == len(seeds) == n) or n == 0:
            raise ValueError(f"{n} prompts, {len(negative_prompts)} negative prompts, "
                             f"{len(seeds)} seeds: need the same number, at least one")
        if width % 8 or height % 8:
            raise UserError(f"image size {width}x{height}: both sides must be multiples of 8")
        images = self._init_images(init_images, n, width, height, steps, strength)
        control: list[Image.Image] | None = None
        if self.controlnet is not None:
            if control_frames is None or len(control_frames) != n:
                raise ValueError("ControlNet needs one frame per prompt")
            control = self.control_images(control_frames, width, height)
        if self.refiner is not None:
            self._check_handover(steps, strength, refiner_switch)
        out: list[Image.Image | None] = [None] * n
        with torch.inference_mode(), _quiet_diffusers():
            for indices, text, refine_text in self._text_groups(prompts, negative_prompts):
                painted = self._paint_group(text, refine_text, [seeds[i] for i in indices], width, height, steps,
                                            guidance, strength, _pick(images, indices), _pick(control, indices),
                                            control_scale, refiner_switch)
                for i, im in zip(indices, painted, strict=True):
                    out[i] = im
        return out  # type: ignore[return-value]

    def _paint_group(self, text: dict, refine_text: dict, seeds: list[int], width: int, height: int, steps: int,
                     guidance: float, strength: float | None, images: list | None, control: list | None,
                     control_scale: float, switch: float) -> list[Image.Image]:
        """The base's call (ControlNet's when on; img2img with strength), then the refiner's on its latents."""
        import torch

        def generators() -> list[Any]:
            # Always a list, never None: None would mean zeroed negative embeddings for a batch of
            # only empty negatives but an encoded "" in a mixed batch, and the frame would change.
            return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

        args: dict[str, Any] = dict(num_inference_steps=steps, guidance_scale=guidance, generator=generators(),
                                    output_type="latent" if self.refiner is not None else "pil", **text,
                                    **self._tracer("base"), **self._style_args())
        if self.refiner is not None:
            args["denoising_end"] = switch
        if strength is not None:
            args.update(image=images, strength=strength)
        else:
            args.update(width=width, height=height)
        if control is not None:
            args["controlnet_conditioning_scale"] = control_scale
            args["control_image" if strength is not None else "image"] = control
            pipe = self.control_pipe(strength is not None)
        else:
            pipe = self.img2img if strength is not None else self.pipe
        result = pipe(**args).images
        if self.refiner is None:
            return list(result)
        return list(self.refiner(image=result, denoising_start=switch, num_inference_steps=steps,
                                 guidance_scale=guidance, generator=generators(), output_type="pil",
                                 **refine_text, **self._tracer("refiner")).images)

    def _check_handover(self, steps: int, strength: float | None, switch: float) -> None:
        """Both the base and the refiner get at least one step, or one clear line (diffusers would
        fail deep inside with an empty schedule)."""
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        timesteps = [int(t) for t in scheduler.timesteps]
        if strength is not None:
            timesteps = timesteps[steps - min(int(steps * strength), steps):]
        cutoff = round(scheduler.config.num_train_timesteps * (1 - switch))
        base = sum(t >= cutoff for t in timesteps)
        if not 0 < base < len(timesteps):
            who = "the base" if base == 0 else "the refiner"
            raise UserError(f"{steps} steps with the refiner switching at {switch} leave {who} no step; "
                            "use more steps or another {generate.refiner_switch}", paths=("generate.refiner_switch",))

    def _init_images(self, init_images: list[Image.Image] | None, n: int, width: int, height: int,
                     steps: int, strength: float | None) -> list[Image.Image] | None:
        """img2img's checks, and its init images at the dream size (None for text to image)."""
        from PIL import Image

        if strength is None:
            return None
        if init_images is None or len(init_images) != n:
            raise ValueError("img2img needs one init image per prompt")
        if not 0 < strength <= 1:
            raise UserError(f"strength {strength}: give a number above 0 and at most 1")
        if int(steps * strength) < 1:
            raise UserError(f"{steps} steps at strength {strength} leave no denoising step; "
                            f"use at least {math.ceil(1 / strength)} steps")
        return [im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
                if im.size != (width, height) or im.mode != "RGB" else im
                for im in init_images]

    def _call(self, start: Start, args: dict[str, Any], strength: float | None,
              images: list[Image.Image] | None) -> list[Image.Image]:
        """One pipeline call from these starting latents (the sampler's later noise from start's generators)."""
        args = {**args, "generator": start.generators}
        if strength is None:
            return list(self.pipe(latents=start.noise, **args).images)
        args = {k: v for k, v in args.items() if k not in ("width", "height")}  # img2img: the init's size
        latents = self.img2img.scheduler.add_noise(start.init, start.noise, start.timestep.repeat(len(images)))
        return list(self.img2img(image=images, strength=strength, latents=latents, **args).images)

    # -- starting noise: the one place it is made ------------------------------------------------

    def _latent_dtype(self) -> Any:
        """The dtype the pipelines draw noise in (their prompt embeddings')."""
        encoder = self.pipe.text_encoder_2 or self.pipe.text_encoder
        return encoder.dtype if encoder is not None else self.pipe.unet.dtype

    def start(self, seeds: list[int], width: int, height: int, steps: int, strength: float | None = None,
              images: list[Image.Image] | None = None) -> Start:
        """Each seed's starting point exactly as the pipeline draws it (one CPU generator per image,
        so an image's noise is its own in any batch, on any device): text to image, its noise;
        image to image, its frame's VAE latents (sampled with its generator first, as diffusers
        does) and then its noise, to be mixed at strength's first timestep. The generators come
        back advanced past these draws, for the sampler's later noise."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        device, dtype = self.pipe._execution_device, self._latent_dtype()
        if strength is None or images is None:
            factor = self.pipe.vae_scale_factor
            shape = (1, self.pipe.unet.config.in_channels, height // factor, width // factor)
            noise = torch.cat([randn_tensor(shape, generator=g, device=device, dtype=dtype) for g in gens])
            return Start(noise, gens)
        pipe = self.img2img
        pipe.scheduler.set_timesteps(steps, device=device)
        timestep = pipe.get_timesteps(steps, strength, device)[0][:1]
        pixels = pipe.image_processor.preprocess(images)
        inits = [pipe.prepare_latents(pixels[i:i + 1], timestep, 1, 1, dtype, device, g, add_noise=False)
                 for i, g in enumerate(gens)]
        noise = [randn_tensor(init.shape, generator=g, device=device, dtype=dtype)
                 for init, g in zip(inits, gens, strict=True)]
        return Start(torch.cat(noise), gens, torch.cat(inits), timestep)

    # -- in-betweens: the stable-diffusion-videos walk -------------------------------------------

    def paint_between(self, a: Ends, b: Ends, ts: list[float], width: int, height: int, steps: int,
                      guidance: float, strength: float | None = None) -> list[Image.Image]:
        """One pipeline call for a batch of in-betweens: image i starts from the spherical
        interpolation at ts[i] of keyframe a[i]'s and b[i]'s starting noise, with their prompt
        embeddings (and img2img init latents) interpolated linearly. At t=0 (t=1) every input is
        exactly keyframe a's (b's), so the in-between is that keyframe. The sampler's later noise
        (ancestral samplers) comes from the nearer keyframe's generator."""
        import torch

        n = len(ts)
        if not (len(a.prompts) == len(b.prompts) == n) or n == 0:
            raise ValueError(f"{n} t values for {len(a.prompts)} and {len(b.prompts)} keyframes")
        init_a = self._init_images(a.init_images, n, width, height, steps, strength)
        init_b = self._init_images(b.init_images, n, width, height, steps, strength)
        with torch.inference_mode(), _quiet_diffusers():
            sa = self.start(a.seeds, width, height, steps, strength, init_a)
            sb = self.start(b.seeds, width, height, steps, strength, init_b)
            w = torch.tensor(ts, dtype=torch.float32)
            noise = slerp(sa.noise, sb.noise, w)
            gens = [ga if t < 0.5 else gb for ga, gb, t in zip(sa.generators, sb.generators, ts, strict=True)]
            init = lerp(sa.init, sb.init, w) if strength is not None else None
            start = Start(noise, gens, init, sa.timestep)
            embeds = [lerp(ea, eb, w) for ea, eb in zip(self._embed(a), self._embed(b), strict=True)]
            args: dict[str, Any] = dict(
                prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], pooled_prompt_embeds=embeds[2],
                negative_pooled_prompt_embeds=embeds[3], num_inference_steps=steps, guidance_scale=guidance,
                output_type="pil", width=width, height=height, **self._style_args())
            images = [im if t < 0.5 else ib for im, ib, t in zip(init_a or [], init_b or [], ts, strict=False)]
            return self._call(start, args, strength, images or None)

    def _embed(self, ends: Ends) -> tuple[Any, Any, Any, Any]:
        """(prompt, negative, pooled, negative pooled) embeddings, as the pipeline makes them from
        the texts (a negative prompt always encoded, never zeroed: as paint passes them)."""
        out = self.pipe.encode_prompt(prompt=list(ends.prompts), device=self.pipe._execution_device,
                                      num_images_per_prompt=1, do_classifier_free_guidance=True,
                                      negative_prompt=list(ends.negative_prompts))
        return out[0], out[1], out[2], out[3]


def _pick(items: list | None, indices: list[int]) -> list | None:
    return None if items is None else [items[i] for i in indices]


class Start(NamedTuple):
    """Where a batch's denoising starts: noise (B, C, H/8, W/8), each image's generator; for
    img2img also its init latents and the timestep the noise is mixed in at."""
    noise: Any
    generators: list[Any]
    init: Any = None
    timestep: Any = None


class Ends(NamedTuple):
    """One end of a batch of in-betweens: per in-between, its keyframe's prompt, negative prompt,
    seed (and img2img init picture)."""
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    init_images: list[Image.Image] | None = None


def _weights(w: Any, like: Any) -> Any:
    """Per-image weights shaped to broadcast over like's other dimensions."""
    return w.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def lerp(v0: Any, v1: Any, w: Any) -> Any:
    """Linear interpolation per image: torch.lerp is exactly v0 at 0 and exactly v1 at 1."""
    import torch

    return torch.lerp(v0, v1, _weights(w, v0))


def slerp(v0: Any, v1: Any, w: Any, dot_threshold: float = 0.9995) -> Any:
    """Spherical interpolation per image (stable-diffusion-videos' and A1111's variation seeds'):
    Gaussian noise keeps its norm on the way. Nearly parallel vectors: linear. Computed in float64
    and exact at the ends (t=0 is v0 and t=1 is v1, bit for bit)."""
    import torch

    out = []
    for k in range(v0.shape[0]):
        t = float(w[k])
        a, b = v0[k], v1[k]
        if t <= 0.0 or t >= 1.0:
            out.append(a if t <= 0.0 else b)
            continue
        a64, b64 = a.double(), b.double()
        dot = float((a64 * b64).sum() / (a64.norm() * b64.norm()))
        if abs(dot) > dot_threshold:
            mixed = (1 - t) * a64 + t * b64
        else:
            theta = math.acos(dot)
            mixed = (math.sin((1 - t) * theta) * a64 + math.sin(t * theta) * b64) / math.sin(theta)
        out.append(mixed.to(a.dtype))
    return torch.stack(out)
