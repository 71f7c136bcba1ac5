#!/usr/bin/env bash
# Parrot end to end (METHODS.md §1), resumable: every step is skipped when its output exists.
#   1. the Ask model: SFT with the loss on user turns on CHATS     -> OUT/ask     (experiment=ask_$SIZE)
#   2. the answer model: ANSWER=<chat model folder>, or (SIZE=tiny only) experiment=sft_tiny -> OUT/sft
#   3. rollout: answer model + Ask model, up to TURNS user turns  -> OUT/rollout/dialogues.jsonl
#   4. chat SFT of the answer model on the rolled-out dialogues    -> OUT/chat    (the model without CaPO)
#   5. CaPO negatives (the paper's three corruptions)              -> OUT/negatives/pairs.jsonl
#   6. CaPO from the chat model                                    -> OUT/capo    (experiment=capo_$SIZE)
#   7. MT-Bench++: QUESTIONS extended once to EXTEND_TO turns by the Ask model, from the reference answers
#      and REFERENCE's answers (-> OUT/mt_bench_questions/question_extended.jsonl); the chat model and the
#      CaPO model answer the same questions; each is graded turn by turn (OUT/mt_bench_chat,
#      OUT/mt_bench_capo), and CaPO is compared with the chat model pairwise (OUT/mt_bench_pair)
#   8. one table: per-turn scores and CaPO's win rate over the chat model per turn (scripts/parrot_summary.py)
#
# SIZE=tiny: the tiny model on the bundled data, on CPU, judged by the STAND-IN judge (reference-word
# overlap, evaluation/mt_bench/standin_judge.py), with the seed chat model OUT/sft as the reference model.
# SIZE=hf: BASE=<HF model the Ask model starts from>, ANSWER=<chat model folder>, JUDGE='eval.py judge
# overrides' (e.g. JUDGE='judge=openai_http judge.base_url=http://host/v1 judge.model=NAME'), and
# REFERENCE='task.reference_model={...}' (any backend; default: the judge's own settings are not guessed:
# required). QUESTIONS: a FastChat question.jsonl (default: the bundled tiny-domain questions).
#
# Usage: [SIZE=tiny|hf] [BASE=dir] [ANSWER=dir] [CHATS=file] [QUESTIONS=file] [SESSIONS=200] [TURNS=12]
#        [EXTEND_TO=8] [JUDGE='...'] [REFERENCE='...'] [TRAIN_ARGS='...'] scripts/parrot_pipeline.sh [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIZE="${SIZE:-tiny}"
OUT="$(realpath -m "${1:-$ROOT/outputs/parrot_${SIZE}_pipeline}")"
SESSIONS="${SESSIONS:-200}"
TURNS="${TURNS:-12}"
EXTEND_TO="${EXTEND_TO:-8}"
CHATS="${CHATS:-$ROOT/data/chat/dialogues.jsonl}"
QUESTIONS="${QUESTIONS:-$ROOT/data/mt_bench/question.jsonl}"
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
cd "$ROOT"
if [[ "$SIZE" != tiny && "$SIZE" != hf ]]; then
  echo "error: SIZE must be tiny or hf, got '$SIZE'" >&2; exit 2
fi
if [[ "$SIZE" == hf ]]; then
  for v in BASE ANSWER; do
    [[ -n "${!v:-}" ]] || { echo "error: SIZE=hf needs $v=<model folder> (BASE: the Ask model's start; ANSWER: the chat model)" >&2; exit 2; }
    [[ -f "${!v}/config.json" ]] || { echo "error: $v=${!v} is not a model folder (no config.json)" >&2; exit 2; }
  done
  [[ -n "${JUDGE:-}" ]] || { echo "error: SIZE=hf needs JUDGE='judge=hf|vllm|openai_http ...' (the stand-in judge is for the tiny demo only)" >&2; exit 2; }
  [[ -n "${REFERENCE:-}" ]] || { echo "error: SIZE=hf needs REFERENCE='task.reference_model={backend: ..., ...}' (it answers the extended turns)" >&2; exit 2; }
  ASK_START=(model.pretrained="$BASE")
  SFT="$(realpath -m "$ANSWER")"
  MAX_NEW=512
else
  ASK_START=()
  SFT="$OUT/sft/hf_model"
  MAX_NEW=48
fi
read -r -a JUDGE_ARGS <<< "${JUDGE:-judge=standin}"
read -r -a REF_ARGS <<< "${REFERENCE:-task.reference_model={backend:hf,path:$OUT/sft/hf_model,dtype:float32,sampling:{temperature:0.0,max_new_tokens:$MAX_NEW}}}"
ASK_GEN="{backend:hf,path:$OUT/ask/hf_model,sampling:{temperature:0.7,top_p:0.95,max_new_tokens:64,seed:1}}"

step() { echo "== $*"; }
train() {  # train NAME [overrides...]: skipped when OUT/NAME/hf_model exists
  local name="$1"; shift
  if [[ ! -f "$OUT/$name/hf_model/config.json" ]]; then
    "$PY" train.py callbacks=minimal logger=csv "$@" export=true hydra.run.dir="$OUT/$name"
  fi
}
stage() {  # stage DIR OUTPUT_FILE [generate.py overrides...]
  local dir="$1" file="$2"; shift 2
  if [[ ! -f "$OUT/$dir/$file" ]]; then
    "$PY" generate.py "$@" hydra.run.dir="$OUT/$dir"
  fi
}
mt_bench() {  # mt_bench NAME [eval.py overrides...]: skipped when OUT/NAME/results.json exists
  local name="$1"; shift
  if [[ ! -f "$OUT/$name/results.json" ]]; then
    "$PY" eval.py task=mt_bench "${JUDGE_ARGS[@]}" data.path="$QUESTIONS" task.max_new_tokens="$MAX_NEW" \
      print_config=false "$@" hydra.run.dir="$OUT/$name"
  fi
}

step "1/8 Ask model (loss on user turns) on $CHATS -> $OUT/ask"
train ask "experiment=ask_$SIZE" "${ASK_START[@]}" data.path="$CHATS" "${EXTRA[@]}"
if [[ "$SIZE" == tiny ]]; then
  step "2/8 answer model (chat SFT) -> $OUT/sft"
  train sft experiment=sft_tiny data.path="$CHATS"
else
  step "2/8 answer model given: $SFT"
fi
step "3/8 rollout ($SESSIONS sessions, up to $TURNS turns) -> $OUT/rollout/dialogues.jsonl"
stage rollout dialogues.jsonl stage=parrot_rollout stage.input="$CHATS" stage.max_sessions="$SESSIONS" \
  stage.turns="$TURNS" stage.answer_model.path="$SFT" stage.ask_model.path="$OUT/ask/hf_model" \
  stage.answer_model.sampling.max_new_tokens="$MAX_NEW" stage.ask_model.sampling.max_new_tokens=64
step "4/8 chat SFT on the rolled-out dialogues -> $OUT/chat"
if [[ "$SIZE" == tiny ]]; then
  train chat experiment=sft_tiny model=hf model.pretrained="$SFT" data.path="$OUT/rollout/dialogues.jsonl" trainer.max_epochs=2
else
  train chat experiment=sft_hf model.pretrained="$SFT" data.path="$OUT/rollout/dialogues.jsonl" "${EXTRA[@]}"
fi
step "5/8 CaPO negatives -> $OUT/negatives/pairs.jsonl"
stage negatives pairs.jsonl stage=capo_negatives stage.input="$OUT/rollout/dialogues.jsonl" \
  stage.generator.path="$OUT/chat/hf_model" stage.generator.sampling.max_new_tokens="$MAX_NEW"
step "6/8 CaPO from the chat model -> $OUT/capo"
train capo "experiment=capo_$SIZE" model=hf model.pretrained="$OUT/chat/hf_model" \
  data.path="$OUT/negatives/pairs.jsonl" "${EXTRA[@]}"

step "7/8 MT-Bench++ ($EXTEND_TO turns, written once) for the chat model and the CaPO model"
EXT="$OUT/mt_bench_questions/question_extended.jsonl"
mkdir -p "$(dirname "$EXT")"
EXTEND=(task.extend_to="$EXTEND_TO" task.extended_questions="$EXT" "task.ask_model=$ASK_GEN" "${REF_ARGS[@]}")
mt_bench mt_bench_chat model=hf model.pretrained="$OUT/chat/hf_model" task.model_id=chat "${EXTEND[@]}"
mt_bench mt_bench_capo model=hf model.pretrained="$OUT/capo/hf_model" task.model_id=chat_capo "${EXTEND[@]}" \
  task.compare_with="[$OUT/mt_bench_chat]"
mt_bench mt_bench_pair model=hf model.pretrained="$OUT/capo/hf_model" task.model_id=chat_capo "${EXTEND[@]}" \
  task.mode=pairwise-baseline task.answers="$OUT/mt_bench_capo/model_answer/chat_capo.jsonl" \
  task.baseline="$OUT/mt_bench_chat/model_answer/chat.jsonl"

step "8/8 summary"
"$PY" scripts/parrot_summary.py "$OUT"
