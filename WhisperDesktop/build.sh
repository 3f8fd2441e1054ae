#!/usr/bin/env bash
# Build WhisperDesktop as a single-folder app: WhisperDesktop/dist/WhisperDesktop/WhisperDesktop
# Usage: bash WhisperDesktop/build.sh [path/to/ggml-model.bin]   (the model is copied into the app's models/)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$PYTHON" -c "import PyInstaller, pywhispercpp, PySimpleGUI" 2>/dev/null || {
  echo "error: the build needs pyinstaller, pywhispercpp and pysimplegui: pip install -r requirements.txt" >&2
  exit 2
}
if [ $# -ge 1 ] && [ ! -f "$1" ]; then   # before the build, which takes minutes
  echo "error: $1: GGML model file not found (make one with convert-ggml.py)" >&2
  exit 2
fi
start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --log-level=WARN \
  --distpath WhisperDesktop/dist --workpath WhisperDesktop/build WhisperDesktop/WhisperDesktop.spec
app=WhisperDesktop/dist/WhisperDesktop
if [ $# -ge 1 ]; then
  # Where the app looks first (the registry's GGML default under the app's folder), copied atomically:
  # an interrupted copy never leaves a truncated model under the final name.
  "$PYTHON" - "$1" "$app" <<'EOF'
import os
import shutil
import sys

from utils.core.files import atomic_write
from utils.inference.registry import default_model

with open(sys.argv[1], "rb") as source, atomic_write(os.path.join(sys.argv[2], default_model("ggml")), "wb") as target:
    shutil.copyfileobj(source, target, 1 << 20)
EOF
fi
echo "built $app in $(( $(date +%s) - start )) s, $(du -sh "$app" | cut -f1)"
