#!/usr/bin/env bash
# One command: set up a virtual environment, install video2dream, and turn a video into a dream.
#   bash scripts/quickstart.sh                      # a 10-second test clip, tiny models (offline, CPU)
#   bash scripts/quickstart.sh clip.mp4 --preset default   # your video, the real models (GPU)
# Each video gets its own run folder, runs/quickstart-<video name> (the test clip: runs/quickstart),
# so a second video never meets the first one's folder.
set -euo pipefail
video=${1:-}
[ $# -gt 0 ] && shift
if [ -n "$video" ]; then
  [ -f "$video" ] || { echo "quickstart: no such video: $video" >&2; exit 1; }
  video="$(cd "$(dirname "$video")" && pwd)/$(basename "$video")"  # before the cd below
fi
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
if [ -z "$video" ]; then
  video=runs/quickstart-clip.mp4
  run=runs/quickstart
  mkdir -p runs
  "$(.venv/bin/python -c 'from video2dream.media import ffmpeg_path; print(ffmpeg_path())')" \
    -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25:duration=10 \
    -f lavfi -i sine=frequency=440:duration=10 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$video"
else
  name=$(basename "$video")
  run="runs/quickstart-${name%.*}"
fi
.venv/bin/video2dream run "$video" -o "$run" --preset tiny "$@"
echo "done: $PWD/$run/dream.mp4 (and $PWD/$run/dreams/, prompts.csv)"
