"""Shared code of the Whisper-Finetune stage scripts, one sub-package per layer (docs/architecture.md).

A layer imports only from the layers above it in this list:
core (no torch at import) -> data -> training, inference -> export -> apps; bench serves tools/.
"""
import os

# The repository root: shipped data (dataset/), the web page (static/, templates/) and fetched models
# (models/) are found from here whatever the working directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
