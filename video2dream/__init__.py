"""video2dream: re-imagine a video through CLIP Interrogator and Stable Diffusion XL."""

__version__ = "0.1.0"
