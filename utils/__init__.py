"""Shared code for the Whisper-Finetune stage scripts."""
