"""Model formats: CTranslate2 models read back into transformers folders (ct2_import), transformers
folders written as CTranslate2 models (ct2_export) and as whisper.cpp GGML files (ggml)."""
from utils.core.errors import UserError


class ExportError(UserError):
    """A model that cannot be exported, or an output path that cannot be written."""
