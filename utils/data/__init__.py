"""Training data: the jsonlines manifest (read and write), decoder labels, augmentation, the torch
Dataset and collator, and the data-set builders (builders/: one module per corpus)."""
