#!/usr/bin/env bash
# RLMEC end to end on the tiny model and the bundled arithmetic problems, on CPU (METHODS.md §3):
#   1. reasoning SFT policy                               -> OUT/sft/hf_model        (experiment=reasoning_tiny)
#   2. n=5 samples per train problem, labelled            -> OUT/sample/samples.jsonl (stage=rlmec_sample)
#   3. the STAND-IN teacher (arith_rules) edits them      -> OUT/teacher/edits.jsonl (stage=rlmec_edit)
#   4. GRM SFT data, then the GRM                         -> OUT/grm_data, OUT/grm   (stage=rlmec_grm_data, experiment=rlmec_grm_tiny)
#   5. the GRM rewrites every sample                      -> OUT/grm_edit/edits.jsonl
#   6. RL data (token rewards, ref log-probs, weights)    -> OUT/rl_data/rl_data.jsonl (stage=rlmec_rl_data)
#   7. RLMEC                                              -> OUT/rlmec_s<seed>        (experiment=rlmec_tiny)
#   8. eval.py greedy accuracy on the bundled test set (200) before (SFT) and after (RLMEC)
# BASELINES=1 also trains RFT, DPO and the two ablations (without L_IR, without token rewards) over
# the same stage outputs, for every seed in SEEDS (default "1"), and prints one table.
#
# Usage: [PROBLEMS=400] [SEEDS="1 2"] [BASELINES=1] scripts/rlmec_tiny_pipeline.sh [OUT_DIR]
# Every step is skipped when its output exists, so a stopped run continues where it stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$(realpath -m "${1:-$ROOT/outputs/rlmec_tiny_pipeline}")"
PROBLEMS="${PROBLEMS:-400}"
SEEDS="${SEEDS:-1}"
cd "$ROOT"
SFT="$OUT/sft/hf_model"

step() { echo "== $*"; }
train() {  # train NAME [overrides...]: skipped when OUT/NAME/hf_model exists
  local name="$1"; shift
  if [[ ! -f "$OUT/$name/hf_model/config.json" ]]; then
    "$PY" train.py "$@" callbacks=minimal logger=csv hydra.run.dir="$OUT/$name"
  fi
}
evaluate() {  # evaluate NAME MODEL_DIR: greedy CoT accuracy on data/reasoning/test.jsonl
  if [[ ! -f "$OUT/eval_$1/results.json" ]]; then
    "$PY" eval.py method=greedy model=hf model.pretrained="$2" progress=false print_config=false \
      hydra.run.dir="$OUT/eval_$1"
  fi
}
stage() {  # stage DIR OUTPUT_FILE [generate.py overrides...]
  local dir="$1" file="$2"; shift 2
  if [[ ! -f "$OUT/$dir/$file" ]]; then
    "$PY" generate.py "$@" hydra.run.dir="$OUT/$dir"
  fi
}

step "1/8 reasoning SFT policy -> $OUT/sft"
train sft experiment=reasoning_tiny
step "2/8 sampling (n=5, T=0.7, top_p=0.95) on the first $PROBLEMS train problems"
stage sample samples.jsonl stage=rlmec_sample stage.generator.path="$SFT" stage.max_problems="$PROBLEMS"
step "3/8 stand-in teacher (arith_rules) minimum-edit rewrites"
stage teacher edits.jsonl stage=rlmec_edit stage.input="$OUT/sample/samples.jsonl" 'stage.editor={backend: arith_rules}'
step "4/8 GRM data and GRM SFT"
stage grm_data grm_sft.jsonl stage=rlmec_grm_data stage.input="$OUT/teacher/edits.jsonl"
train grm experiment=rlmec_grm_tiny model.pretrained="$SFT" data.path="$OUT/grm_data/grm_sft.jsonl"
step "5/8 the GRM rewrites every sample"
stage grm_edit edits.jsonl stage=rlmec_edit stage.input="$OUT/sample/samples.jsonl" stage.editor.path="$OUT/grm/hf_model"
step "6/8 RL data"
stage rl_data rl_data.jsonl stage=rlmec_rl_data stage.input="$OUT/grm_edit/edits.jsonl" \
  stage.policy.path="$SFT" stage.grm.path="$OUT/grm/hf_model"
if [[ "${BASELINES:-0}" == "1" ]]; then
  stage baselines dpo.jsonl stage=rlmec_baseline_data stage.input="$OUT/sample/samples.jsonl"
fi

step "7/8 RLMEC (and baselines) per seed: $SEEDS"
RL=(model.pretrained="$SFT" data.path="$OUT/rl_data/rl_data.jsonl")
for s in $SEEDS; do
  train "rlmec_s$s" experiment=rlmec_tiny "${RL[@]}" seed="$s"
  if [[ "${BASELINES:-0}" == "1" ]]; then
    train "rlmec_nolir_s$s" experiment=rlmec_tiny "${RL[@]}" seed="$s" module.lam=0
    train "rlmec_seqreward_s$s" experiment=rlmec_tiny "${RL[@]}" seed="$s" module.reward_mode=sequence
    train "rft_s$s" experiment=rlmec_rft_tiny model.pretrained="$SFT" data.path="$OUT/baselines/rft.jsonl" seed="$s"
    train "dpo_s$s" experiment=rlmec_dpo_tiny model.pretrained="$SFT" data.path="$OUT/baselines/dpo.jsonl" seed="$s"
  fi
done

step "8/8 greedy accuracy on data/reasoning/test.jsonl (200)"
evaluate sft "$SFT"
for d in "$OUT"/*_s*/; do
  n="$(basename "$d")"
  [[ -f "$d/hf_model/config.json" ]] && evaluate "$n" "$d/hf_model"
done
"$PY" - "$OUT" <<'PY'
import json, sys
from collections import defaultdict
from pathlib import Path
out = Path(sys.argv[1])
def acc(d):
    return json.loads((d / "results.json").read_text())["metrics"]["greedy"]["accuracy"]
rows = defaultdict(list)
for d in sorted(out.glob("eval_*")):
    if (d / "results.json").exists():
        rows[d.name[5:].rsplit("_s", 1)[0]].append(acc(d))
print("method            greedy accuracy (mean over seeds: per seed)")
for name, vals in rows.items():
    print(f"{name:<17} {sum(vals) / len(vals):.3f}  {['%.3f' % v for v in vals]}")
s = json.loads((out / "rl_data" / "summary.json").read_text())
print(f"RL data: {s['records']} samples, non-zero-reward fraction {s['nonzero_reward_frac']:.3f}, "
      f"mean reward correct {s['mean_reward_correct']}, wrong {s['mean_reward_wrong']}")
PY
