"""The telephone game: caption a picture, paint the caption, caption the painting, ... N times.

One image:   OUT/step_000.png (the input as the chain saw it: flattened onto white, RGB, fitted to
             the dream size), step_001.png ... step_NNN.png, chain.csv, chain_strip.png, drift.png,
             chain.mp4.
A folder:    one such chain per image in OUT/<image name>/, plus OUT/index_strip.png.
A video:     OUT is a run folder: frames/ (extract), then round r reads round r-1's pictures (round 1
             reads frames/) and writes prompts (prompts.csv, prompts_r02.csv, ...) and dreams
             (dreams/, dreams_r02/, ...). Round 1 is exactly what `interrogate` + `generate` make, so
             `assemble` works on it as usual; `assemble --round K` makes one round's video and
             `assemble --grid` all of them side by side. drift.csv / drift.png: per round.

Step k of a chain (k >= 1): the prompt is made from step k-1's caption (the caption itself in
caption mode, else CLIP Interrogator's prompt built on it), SDXL paints it with seed
`--seed + k` (`--seed` in fixed seed mode), and BLIP captions the new picture. Each step's PNG
carries its row (caption, prompt, seed) and the chain's settings key in a text chunk, so a killed
chain resumes from its last finished step and a larger --steps extends it. Other settings (another
input, model, size, caption length, seed, ...) make the command refuse, naming what changed;
--force starts the chain over.

Modules: inputs (input kinds, pictures as the chain sees them), steps (a step's row and PNG), keys
(the chain's keys, the "what changed" refusal), chain (one image's chain), outputs (chain.csv, strip,
drift plot, chain.mp4, the summary), video (a video's rounds), game (the command).
"""

from .chain import ChainResult, Drift, run_chain
from .game import telephone
from .inputs import fit, input_kind, is_image, list_images, load_image, to_rgb
from .keys import CHAIN_VERSION, chain_key, chain_outputs_key, chain_settings
from .outputs import COLUMNS, OUTPUTS, TelephoneResult, describe
from .steps import CHUNK, Step, read_step, seed_for, step_name
from .video import SEED_STRIDE, RoundView, play_video, round_prompts

__all__ = ["telephone", "run_chain", "play_video", "chain_settings", "input_kind", "load_image", "fit", "to_rgb",
           "is_image", "list_images", "chain_key", "chain_outputs_key", "CHAIN_VERSION",
           "CHUNK", "COLUMNS", "OUTPUTS", "SEED_STRIDE", "ChainResult", "Drift", "RoundView", "Step",
           "TelephoneResult", "describe", "read_step", "round_prompts", "seed_for", "step_name"]
