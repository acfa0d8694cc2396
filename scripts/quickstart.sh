#!/usr/bin/env bash
# One command: set up a virtual environment, install video2dream, and turn a video into a dream.
#   bash scripts/quickstart.sh                      # a 10-second test clip, tiny models (offline, CPU)
#   bash scripts/quickstart.sh clip.mp4 --preset default   # your video, the real models (GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
video=${1:-}
[ $# -gt 0 ] && shift
if [ -z "$video" ]; then
  video=runs/quickstart-clip.mp4
  mkdir -p runs
  "$(.venv/bin/python -c 'from video2dream.media import ffmpeg_path; print(ffmpeg_path())')" \
    -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25:duration=10 \
    -f lavfi -i sine=frequency=440:duration=10 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$video"
fi
.venv/bin/video2dream run "$video" -o runs/quickstart --preset tiny "$@"
echo "done: runs/quickstart/dream.mp4 (and runs/quickstart/dreams/, prompts.csv)"
