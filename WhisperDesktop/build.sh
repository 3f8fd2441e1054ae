#!/usr/bin/env bash
# Build WhisperDesktop as a single-folder app: WhisperDesktop/dist/WhisperDesktop/WhisperDesktop
# Usage: bash WhisperDesktop/build.sh [path/to/ggml-model.bin]   (the model is copied into the app's models/)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$PYTHON" -c "import PyInstaller, pywhispercpp, PySimpleGUI" 2>/dev/null || {
  echo "error: the build needs pyinstaller, pywhispercpp and pysimplegui: pip install -r requirements.txt" >&2
  exit 1
}
start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --log-level=WARN \
  --distpath WhisperDesktop/dist --workpath WhisperDesktop/build WhisperDesktop/WhisperDesktop.spec
app=WhisperDesktop/dist/WhisperDesktop
if [ $# -ge 1 ]; then
  [ -f "$1" ] || { echo "error: $1: GGML model file not found (make one with convert-ggml.py)" >&2; exit 1; }
  mkdir -p "$app/models"
  cp "$1" "$app/models/ggml-model.bin.part" && mv "$app/models/ggml-model.bin.part" "$app/models/ggml-model.bin"
fi
echo "built $app in $(( $(date +%s) - start )) s, $(du -sh "$app" | cut -f1)"
