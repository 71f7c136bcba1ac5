#!/usr/bin/env bash
# Check that your own model works with every Quartet pipeline: 2 steps (debug=smoke) of each of
#   1. chat SFT                 (train.py model=hf data=chat)
#   2. the Parrot Ask model     (train.py model=hf data=ask)
#   3. CaPO negatives           (generate.py stage=capo_negatives, the model as the generator)
#   4. CaPO on those pairs      (train.py model=hf module=capo data=preference, precomputed reference)
#   5. reasoning evaluation     (eval.py decoding=all: greedy, Self-Consistency, Self-Agreement)
# on a few bundled real dialogues and questions. Each step prints its result; the first failure stops
# the script with that step's error.
#
# Usage: scripts/check_model.sh <model dir or hub id> [OUT_DIR]
#   DATA=<chats.jsonl> QUESTIONS=<questions.jsonl> override the data; extra Hydra overrides for every
#   train.py step go in TRAIN_ARGS (e.g. TRAIN_ARGS="model.dtype=bfloat16 model.lora.enabled=true"), and
#   for the negatives step in NEG_ARGS (e.g. NEG_ARGS="stage.generator.sampling.temperature=1.0").
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <model dir or hub id> [OUT_DIR]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
MODEL="$1"
[[ -e "$MODEL" ]] && MODEL="$(realpath "$MODEL")"
OUT="$(realpath -m "${2:-$ROOT/outputs/check_model}")"
DATA="$(realpath -m "${DATA:-$ROOT/data/realmodel/dialogues.jsonl}")"
QUESTIONS="$(realpath -m "${QUESTIONS:-$ROOT/data/realmodel/questions.jsonl}")"
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a NEG_EXTRA <<< "${NEG_ARGS:-}"
cd "$ROOT"
COMMON=(model=hf "model.pretrained=$MODEL" debug=smoke print_config=false "${EXTRA[@]}")

loss() { "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"  steps {s['global_step']}, loss {s['first_step_loss']:.4f} -> {s['last_step_loss']:.4f}\")" "$1/summary.json"; }

echo "== 1/5 chat SFT -> $OUT/sft"
"$PY" train.py "${COMMON[@]}" module=sft data=chat "data.path=$DATA" "hydra.run.dir=$OUT/sft"
loss "$OUT/sft"

echo "== 2/5 Ask model (loss on user turns) -> $OUT/ask"
"$PY" train.py "${COMMON[@]}" module=sft data=ask "data.path=$DATA" "hydra.run.dir=$OUT/ask"
loss "$OUT/ask"

echo "== 3/5 CaPO negatives -> $OUT/negatives/pairs.jsonl"
"$PY" generate.py stage=capo_negatives "stage.input=$DATA" "stage.generator.path=$MODEL" \
  stage.max_dialogues=4 stage.generator.sampling.max_new_tokens=24 \
  "stage.output=$OUT/negatives/pairs.jsonl" "hydra.run.dir=$OUT/negatives" "${NEG_EXTRA[@]}"
echo "  $(wc -l < "$OUT/negatives/pairs.jsonl") pairs"

echo "== 4/5 CaPO (precomputed reference) -> $OUT/capo"
"$PY" train.py "${COMMON[@]}" module=capo data=preference "data.path=$OUT/negatives/pairs.jsonl" \
  data.max_length=512 data.on_bad_record=skip module.reference=precomputed "hydra.run.dir=$OUT/capo"
loss "$OUT/capo"

echo "== 5/5 evaluation: greedy, SC, Self-Agreement -> $OUT/eval"
"$PY" eval.py decoding=all model=hf "model.pretrained=$MODEL" "data.path=$QUESTIONS" data.limit=2 \
  decoding.num_paths=2 decoding.max_new_tokens=48 print_config=false progress=false "hydra.run.dir=$OUT/eval"
"$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print('  ' + ', '.join(f'{k} {v[\"accuracy\"]:.2f}' for k, v in r['metrics'].items()))" "$OUT/eval/results.json"
echo "all pipelines ran on $MODEL"
