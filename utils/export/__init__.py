"""Model formats: CTranslate2 models read back into transformers folders, transformers folders written
as CTranslate2 models and as whisper.cpp GGML files."""
