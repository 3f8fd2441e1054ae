#!/usr/bin/env bash
# `make demo`: the training spine end to end on the shipped sample corpus and the real whisper-base.
#   1. CER of whisper-base on dataset/zh_test.jsonl            (evaluation.py)
#   2. a short LoRA fine-tune, frozen encoder, on zh_train     (finetune.py)
#   3. merge the best adapter into a standalone model          (merge_lora.py)
#   4. CER of the fine-tuned model on the same test set        (evaluation.py)
# About 10-15 minutes on a 2-core CPU. Settings can be changed through the environment, e.g.
#   DEMO_STEPS=120 DEMO_BATCH=8 bash tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
BASE=${DEMO_BASE_MODEL:-models/whisper-base}
TRAIN=${DEMO_TRAIN_DATA:-dataset/zh_train.jsonl}
TEST=${DEMO_TEST_DATA:-dataset/zh_test.jsonl}
OUT=${DEMO_OUT:-output/demo}
STEPS=${DEMO_STEPS:-60}           # optimizer steps; with batch 4 about one pass over zh_train
BATCH=${DEMO_BATCH:-4}
EVAL_CLIPS=${DEMO_EVAL_CLIPS:-16} # clips decoded by each evaluation during training
WORKERS=${DEMO_WORKERS:-2}

if [ ! -f "$BASE/config.json" ]; then
  echo "error: $BASE is missing; run 'make models' (python tools/download_model.py --model=whisper-base)" >&2
  exit 2
fi
NAME=$(basename "$BASE")
HALF=$(( STEPS / 2 > 0 ? STEPS / 2 : 1 ))
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/4 evaluate $BASE on $TEST"
"$PY" evaluation.py --model_path="$BASE" --test_data="$TEST" --metric=cer --batch_size=8 \
  --num_workers="$WORKERS" --language=Chinese --local_files_only=True --output_file="$OUT/cer_before.json"

echo "== 2/4 LoRA fine-tune ($STEPS steps of $BATCH clips, frozen encoder) on $TRAIN"
"$PY" finetune.py --base_model="$BASE" --train_data="$TRAIN" --test_data="$TEST" --output_dir="$OUT" \
  --language=Chinese --freeze_encoder=True --max_steps="$STEPS" --per_device_train_batch_size="$BATCH" \
  --per_device_eval_batch_size=8 --learning_rate=1e-3 --warmup_steps=$(( STEPS / 10 )) \
  --logging_steps=5 --eval_steps="$HALF" --save_steps="$HALF" --save_total_limit=2 \
  --max_eval_samples="$EVAL_CLIPS" --num_workers="$WORKERS" --local_files_only=True

echo "== 3/4 merge $OUT/$NAME/checkpoint-best into $BASE"
"$PY" merge_lora.py --lora_model="$OUT/$NAME/checkpoint-best" --output_dir="$OUT/models" --local_files_only=True

echo "== 4/4 evaluate the fine-tuned model on $TEST"
"$PY" evaluation.py --model_path="$OUT/models/$NAME-finetune" --test_data="$TEST" --metric=cer --batch_size=8 \
  --num_workers="$WORKERS" --language=Chinese --local_files_only=True --output_file="$OUT/cer_after.json"

"$PY" - "$OUT" "$start" <<'EOF'
import json, sys, time
out, start = sys.argv[1], float(sys.argv[2])
before = json.load(open(f"{out}/cer_before.json", encoding="utf-8"))
after = json.load(open(f"{out}/cer_after.json", encoding="utf-8"))
print(f"demo: CER {before['value']:.3f} -> {after['value']:.3f} on {after['counts']['utterances']} test clips "
      f"({time.time() - start:.0f} s); fine-tuned model in {after['model_path']}, reports in {out}/")
EOF
