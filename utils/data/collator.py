"""Batches SpeechDataset items for Seq2SeqTrainer."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

IGNORE_INDEX = -100   # positions the loss skips (transformers' convention)
# An item SpeechDataset could not use under --skip_bad is {SKIPPED_KEY: "<file>:<line>: <problem>"}; the
# collator leaves it out of the batch and hands the descriptions on under this key, where the trainer
# (utils.training.callbacks.WhisperTrainer) counts them.
SKIPPED_KEY = "skipped_clips"


class SpeechSeq2SeqCollator:
    """{"input_features": FloatTensor[B, n_mels, 3000], "labels": LongTensor[B, T]}, or with items from
    the encoder cache {"encoder_outputs": BaseModelOutput(FloatTensor[B, frames, d_model]), "labels": ...}.

    Labels are padded with -100. A leading decoder-start token (<|startoftranscript|>) is
    removed, because WhisperForConditionalGeneration prepends `decoder_start_token_id` when it
    shifts the labels into decoder inputs; keeping it would teach the model to repeat it.
    Skipped items (SKIPPED_KEY) are left out; their descriptions travel with the batch.
    `no_loss_ids` (utils.training.retention.prompt_loss_mask_ids): where one of these opens a label (the
    language token, then the task token) its label is -100: the decoder still reads it, but training on one
    language does not teach it to predict that language for every clip.
    """

    def __init__(self, processor, decoder_start_token_id: int, no_loss_ids: frozenset = frozenset()):
        self.processor = processor
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.no_loss_ids = frozenset(int(i) for i in no_loss_ids)

    def __call__(self, features: Sequence[dict]) -> dict:
        if not features:
            raise ValueError("cannot collate an empty batch")
        skipped = [f[SKIPPED_KEY] for f in features if SKIPPED_KEY in f]
        if skipped:
            features = [f for f in features if SKIPPED_KEY not in f]
            if not features:
                from utils.data.manifest import DataError

                raise DataError(f"every clip of a batch was unusable, e.g. {skipped[0]}")
        batch = self._collate(features)
        if skipped:
            batch[SKIPPED_KEY] = skipped
        return batch

    def _collate(self, features: Sequence[dict]) -> dict:
        labels = []
        for f in features:
            ids = [int(t) for t in f["labels"]]
            if ids and ids[0] == self.decoder_start_token_id:
                ids = ids[1:]
            labels.append(ids)
        width = max(len(ids) for ids in labels)
        padded = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(labels):
            padded[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            # Only the opening prompt: <|lang|> then <|task|>; the text after them is always trained.
            for position in range(min(2, len(ids))):
                if ids[position] not in self.no_loss_ids:
                    break
                padded[row, position] = IGNORE_INDEX
        missing = [i for i, f in enumerate(features) if "cache_row" in f]
        if missing or any("encoder_hidden_states" in f for f in features):
            return {**self._stored_outputs(features, missing), "labels": padded}
        inputs = np.stack([np.asarray(f["input_features"], dtype=np.float32) for f in features])
        return {"input_features": torch.from_numpy(inputs), "labels": padded}

    @staticmethod
    def _stored_outputs(features: Sequence[dict], missing: list[int]) -> dict:
        """Items from utils.training.encoder_cache: the model skips its encoder and reads the stored outputs;
        clips not stored yet travel as `missing_*` for the training step to encode and store."""
        # A BaseModelOutput, not a tuple: generate() (evaluation with --metric) reads its shape from one.
        from transformers.modeling_outputs import BaseModelOutput

        stored = [i for i in range(len(features)) if i not in set(missing)]
        batch = {}
        if stored:
            first = np.asarray(features[stored[0]]["encoder_hidden_states"])
            hidden = np.zeros((len(features), *first.shape), dtype=np.float32)
            for i in stored:
                hidden[i] = features[i]["encoder_hidden_states"]
            if not missing:
                return {"encoder_outputs": BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))}
            batch["cached_hidden"] = torch.from_numpy(hidden)
        batch["missing_features"] = torch.from_numpy(
            np.stack([np.asarray(features[i]["input_features"], dtype=np.float32) for i in missing]))
        batch["missing_positions"] = torch.tensor(missing, dtype=torch.long)
        batch["missing_rows"] = torch.tensor([features[i]["cache_row"] for i in missing], dtype=torch.long)
        return batch
