#!/usr/bin/env bash
# The whole Parrot recipe on the tiny model and the bundled data, on CPU (METHODS.md §1):
#   1. Ask-model SFT (loss on user turns)                       -> OUT/ask/hf_model      (experiment=ask_tiny)
#   2. chat SFT of the answer model (the seed chat model)       -> OUT/sft/hf_model      (experiment=sft_tiny)
#   3. rollout: answer model + Ask model, 8 turns per session    -> OUT/rollout/dialogues.jsonl (stage=parrot_rollout)
#   4. chat SFT on the rolled-out dialogues                      -> OUT/chat/hf_model
#   5. CaPO negatives on the rolled-out dialogues                -> OUT/negatives/pairs.jsonl (stage=capo_negatives)
#   6. CaPO from the chat model                                  -> OUT/capo/hf_model     (experiment=capo_tiny)
#   7. eval.py task=mt_bench judge=standin on the bundled FastChat-format questions, for the chat model
#      (without CaPO) and the CaPO model; the per-turn plot shows both -> OUT/mt_bench_*/score_per_turn.png
# The judge is a STAND-IN (reference-word overlap, evaluation/mt_bench/standin_judge.py), not a real judge.
#
# Usage: scripts/parrot_tiny_pipeline.sh [OUT_DIR]   (SESSIONS=200 TURNS=8 by default)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$(realpath -m "${1:-$ROOT/outputs/parrot_tiny_pipeline}")"
SESSIONS="${SESSIONS:-200}"
TURNS="${TURNS:-8}"
cd "$ROOT"

train_once() {  # folder, overrides...
  local dir="$1"; shift
  if [[ ! -f "$dir/hf_model/config.json" ]]; then
    "$PY" train.py "$@" callbacks=minimal hydra.run.dir="$dir"
  fi
}

echo "== 1/7 Ask model -> $OUT/ask"
train_once "$OUT/ask" experiment=ask_tiny
echo "== 2/7 answer model (chat SFT) -> $OUT/sft"
train_once "$OUT/sft" experiment=sft_tiny

echo "== 3/7 rollout ($SESSIONS sessions, up to $TURNS turns) -> $OUT/rollout/dialogues.jsonl"
if [[ ! -f "$OUT/rollout/dialogues.jsonl" ]]; then
  "$PY" generate.py stage=parrot_rollout stage.max_sessions="$SESSIONS" stage.turns="$TURNS" \
    stage.answer_model.path="$OUT/sft/hf_model" stage.ask_model.path="$OUT/ask/hf_model" \
    stage.answer_model.sampling.max_new_tokens=48 stage.ask_model.sampling.max_new_tokens=24 \
    stage.output="$OUT/rollout/dialogues.jsonl" hydra.run.dir="$OUT/rollout"
fi

echo "== 4/7 chat SFT on the rolled-out dialogues -> $OUT/chat"
train_once "$OUT/chat" experiment=sft_tiny model=hf model.pretrained="$OUT/sft/hf_model" \
  data.path="$OUT/rollout/dialogues.jsonl" trainer.max_epochs=2

echo "== 5/7 CaPO negatives -> $OUT/negatives/pairs.jsonl"
if [[ ! -f "$OUT/negatives/pairs.jsonl" ]]; then
  "$PY" generate.py stage=capo_negatives stage.input="$OUT/rollout/dialogues.jsonl" \
    stage.generator.path="$OUT/chat/hf_model" stage.generator.batch_size=32 \
    stage.generator.sampling.max_new_tokens=48 \
    stage.output="$OUT/negatives/pairs.jsonl" hydra.run.dir="$OUT/negatives"
fi

echo "== 6/7 CaPO -> $OUT/capo"
train_once "$OUT/capo" experiment=capo_tiny model=hf model.pretrained="$OUT/chat/hf_model" \
  data.path="$OUT/negatives/pairs.jsonl"

echo "== 7/7 MT-Bench (stand-in judge) -> $OUT/mt_bench_chat, $OUT/mt_bench_capo"
"$PY" eval.py task=mt_bench judge=standin model=hf model.pretrained="$OUT/chat/hf_model" \
  task.model_id=chat task.max_new_tokens=48 hydra.run.dir="$OUT/mt_bench_chat"
"$PY" eval.py task=mt_bench judge=standin model=hf model.pretrained="$OUT/capo/hf_model" \
  task.model_id=chat_capo task.max_new_tokens=48 task.compare_with="[$OUT/mt_bench_chat]" \
  hydra.run.dir="$OUT/mt_bench_capo"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
s = json.loads((out / "rollout" / "summary.json").read_text())
st = s["statistics"]
print(f"rollout: {s['dialogues']} dialogues, {st['turns_per_session']['mean']:.2f} turns/session, "
      f"{st['context_dependent_per_session']:.2f} context-dependent queries/session, rejected {s['rejected_turns']}")
for name in ("mt_bench_chat", "mt_bench_capo"):
    r = json.loads((out / name / "results.json").read_text())
    turns = " ".join(f"t{t}={v['mean']:.2f}" for t, v in r["per_turn"].items())
    print(f"{name}: score {r['score']:.2f} ({r['scored_turns']} turns; {turns})")
PYEOF
