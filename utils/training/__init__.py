"""Fine-tuning around transformers' Seq2SeqTrainer: LoRA/AdaLoRA adapters, callbacks and checkpoints,
the frozen-encoder output cache and the CPU LoRA step."""
