#!/usr/bin/env bash
# RLMEC end to end (METHODS.md §3), resumable: every step is skipped when its output exists.
#   1. the SFT policy: POLICY=<hf model folder>, or (SIZE=tiny only) experiment=reasoning_tiny -> OUT/sft
#   2. n=5 samples per train problem, labelled            -> OUT/sample/samples.jsonl  (stage=rlmec_sample)
#   3. the teacher's minimum-edit rewrites                -> OUT/teacher/edits.jsonl  (stage=rlmec_edit)
#      TEACHER: generate.py overrides for stage.editor; default the STAND-IN rule teacher for the bundled
#      arithmetic ('stage.editor={backend: arith_rules}'); a real teacher is any backend, e.g.
#      TEACHER='stage.editor.backend=openai_http stage.editor.base_url=http://host/v1 stage.editor.model=NAME'
#   4. GRM SFT data, then the GRM                         -> OUT/grm_data, OUT/grm    (experiment=rlmec_grm_$SIZE)
#   5. the GRM rewrites every sample                      -> OUT/grm_edit/edits.jsonl
#   6. RL data (token rewards, ref log-probs, weights)    -> OUT/rl_data/rl_data.jsonl (stage=rlmec_rl_data)
#   7. RLMEC per seed                                     -> OUT/rlmec_s<seed>         (experiment=rlmec_$SIZE)
#      BASELINES=1 adds RFT, DPO and the two ablations (without L_IR, without token rewards) per seed,
#      and the online methods from the same SFT policy on the same PROBLEMS prompts: GRPO, RLOO, PPO
#      (experiment=grpo|rloo|ppo_$SIZE) and online RLMEC with the GRM of step 4 (rlmec_online_$SIZE),
#      ONLINE_STEPS optimiser steps each (default: one pass over the PROBLEMS prompts, 4 a step)
#   8. eval.py greedy accuracy on EVAL_DATA (default the bundled test set, 200) for every model; one table
#
# Usage: [SIZE=tiny|hf] [POLICY=dir] [PROBLEMS=400] [SEEDS="1 2"] [BASELINES=1] [ONLINE_STEPS=N] [TEACHER='...']
#        [TRAIN_DATA=file.jsonl] [EVAL_DATA=file.jsonl] [TRAIN_ARGS='...'] scripts/rlmec_pipeline.sh [OUT_DIR]
# TRAIN_ARGS are extra train.py overrides for steps 4 and 7 (a quick check of a real model:
# TRAIN_ARGS='debug=smoke callbacks=none data.max_length=1024').
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIZE="${SIZE:-tiny}"
OUT="$(realpath -m "${1:-$ROOT/outputs/rlmec_${SIZE}_pipeline}")"
PROBLEMS="${PROBLEMS:-400}"
SEEDS="${SEEDS:-1}"
ONLINE_STEPS="${ONLINE_STEPS:-$(( (PROBLEMS + 3) / 4 ))}"
TRAIN_DATA="${TRAIN_DATA:-$ROOT/data/reasoning/train.jsonl}"
EVAL_DATA="${EVAL_DATA:-$ROOT/data/reasoning/test.jsonl}"
read -r -a TEACHER_ARGS <<< "${TEACHER:-stage.editor={backend:arith_rules}}"
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
# The stages' default lengths (512 new tokens) fit real GSM8K/MATH solutions; the bundled arithmetic is short.
SAMPLE_LEN=() EDIT_LEN=()
if [[ "$SIZE" == tiny ]]; then
  SAMPLE_LEN=(stage.generator.sampling.max_new_tokens=128) EDIT_LEN=(stage.editor.sampling.max_new_tokens=160)
fi
cd "$ROOT"
if [[ "$SIZE" != tiny && "$SIZE" != hf ]]; then
  echo "error: SIZE must be tiny or hf, got '$SIZE'" >&2; exit 2
fi
if [[ -n "${POLICY:-}" ]]; then
  SFT="$(realpath -m "$POLICY")"
  [[ -f "$SFT/config.json" ]] || { echo "error: POLICY=$POLICY is not a model folder (no config.json)" >&2; exit 2; }
elif [[ "$SIZE" == tiny ]]; then
  SFT="$OUT/sft/hf_model"
else
  echo "error: SIZE=hf needs POLICY=<the SFT policy's model folder>" >&2; exit 2
fi

step() { echo "== $*"; }
train() {  # train NAME [overrides...]: skipped when OUT/NAME/hf_model exists
  local name="$1"; shift
  if [[ ! -f "$OUT/$name/hf_model/config.json" ]]; then
    "$PY" train.py callbacks=minimal logger=csv "$@" export=true hydra.run.dir="$OUT/$name"
  fi
}
evaluate() {  # evaluate NAME MODEL_DIR: greedy CoT accuracy on EVAL_DATA
  if [[ ! -f "$OUT/eval_$1/results.json" ]]; then
    "$PY" eval.py decoding=greedy model=hf model.pretrained="$2" data.path="$EVAL_DATA" progress=false \
      print_config=false hydra.run.dir="$OUT/eval_$1"
  fi
}
stage() {  # stage DIR OUTPUT_FILE [generate.py overrides...]
  local dir="$1" file="$2"; shift 2
  if [[ ! -f "$OUT/$dir/$file" ]]; then
    "$PY" generate.py "$@" hydra.run.dir="$OUT/$dir"
  fi
}

if [[ -z "${POLICY:-}" ]]; then
  step "1/8 reasoning SFT policy -> $OUT/sft"
  train sft experiment=reasoning_tiny
else
  step "1/8 SFT policy given: $SFT"
fi
step "2/8 sampling (n=5, T=0.7, top_p=0.95) on the first $PROBLEMS problems of $TRAIN_DATA"
stage sample samples.jsonl stage=rlmec_sample stage.input="$TRAIN_DATA" stage.generator.path="$SFT" \
  stage.max_problems="$PROBLEMS" "${SAMPLE_LEN[@]}"
step "3/8 teacher minimum-edit rewrites (${TEACHER_ARGS[*]})"
stage teacher edits.jsonl stage=rlmec_edit stage.input="$OUT/sample/samples.jsonl" "${TEACHER_ARGS[@]}" \
  "${EDIT_LEN[@]}"
step "4/8 GRM data and GRM SFT"
stage grm_data grm_sft.jsonl stage=rlmec_grm_data stage.input="$OUT/teacher/edits.jsonl"
train grm "experiment=rlmec_grm_$SIZE" model.pretrained="$SFT" data.path="$OUT/grm_data/grm_sft.jsonl" "${EXTRA[@]}"
step "5/8 the GRM rewrites every sample"
stage grm_edit edits.jsonl stage=rlmec_edit stage.input="$OUT/sample/samples.jsonl" stage.editor.path="$OUT/grm/hf_model" \
  "${EDIT_LEN[@]}"
step "6/8 RL data"
stage rl_data rl_data.jsonl stage=rlmec_rl_data stage.input="$OUT/grm_edit/edits.jsonl" \
  stage.policy.path="$SFT" stage.grm.path="$OUT/grm/hf_model"
if [[ "${BASELINES:-0}" == "1" ]]; then
  stage baselines dpo.jsonl stage=rlmec_baseline_data stage.input="$OUT/sample/samples.jsonl"
fi

step "7/8 RLMEC (and baselines) per seed: $SEEDS"
RL=(model.pretrained="$SFT" data.path="$OUT/rl_data/rl_data.jsonl")
for s in $SEEDS; do
  train "rlmec_s$s" "experiment=rlmec_$SIZE" "${RL[@]}" seed="$s" "${EXTRA[@]}"
  if [[ "${BASELINES:-0}" == "1" ]]; then
    train "rlmec_nolir_s$s" "experiment=rlmec_$SIZE" "${RL[@]}" seed="$s" module.lam=0 "${EXTRA[@]}"
    train "rlmec_seqreward_s$s" "experiment=rlmec_$SIZE" "${RL[@]}" seed="$s" module.reward_mode=sequence "${EXTRA[@]}"
    train "rft_s$s" "experiment=rlmec_rft_$SIZE" model.pretrained="$SFT" data.path="$OUT/baselines/rft.jsonl" seed="$s" "${EXTRA[@]}"
    train "dpo_s$s" "experiment=rlmec_dpo_$SIZE" model.pretrained="$SFT" data.path="$OUT/baselines/dpo.jsonl" seed="$s" "${EXTRA[@]}"
    ONLINE=(model=hf model.pretrained="$SFT" data.path="$TRAIN_DATA" data.limit="$PROBLEMS" data.batch_size=4
      trainer.max_steps="$ONLINE_STEPS" seed="$s")
    for m in grpo rloo ppo; do
      train "${m}_s$s" "experiment=${m}_$SIZE" "${ONLINE[@]}" "${EXTRA[@]}"
    done
    train "rlmec_online_s$s" "experiment=rlmec_online_$SIZE" "${ONLINE[@]}" module.grm.path="$OUT/grm/hf_model" "${EXTRA[@]}"
  fi
done

step "8/8 greedy accuracy on $EVAL_DATA"
evaluate sft "$SFT"
for d in "$OUT"/*_s*/; do
  n="$(basename "$d")"
  [[ -f "$d/hf_model/config.json" ]] && evaluate "$n" "$d/hf_model"
done
"$PY" scripts/rlmec_summary.py "$OUT"
