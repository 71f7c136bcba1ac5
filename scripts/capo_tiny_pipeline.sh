#!/usr/bin/env bash
# CaPO end to end on the tiny model and the bundled dialogues, on CPU (METHODS.md §1):
#   1. chat SFT of the tiny model                      -> OUT/sft/hf_model      (experiment=sft_tiny)
#   2. CaPO negatives, the SFT model as the generator  -> OUT/negatives/pairs.jsonl (generate.py stage=capo_negatives)
#   3. CaPO from the SFT model on those pairs           -> OUT/capo             (experiment=capo_tiny)
# and prints the held-out (validation) reward accuracy, overall and per corruption type.
#
# Usage: scripts/capo_tiny_pipeline.sh [OUT_DIR] [extra train.py overrides for step 3 ...]
#   BUNDLE=1 scripts/capo_tiny_pipeline.sh   also refreshes data/capo/pairs.jsonl (the pairs of the
#   first BUNDLE_DIALOGUES dialogues, default 120), which `python train.py experiment=capo_tiny` uses.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$(realpath -m "${1:-$ROOT/outputs/capo_tiny_pipeline}")"
shift || true
cd "$ROOT"

echo "== 1/3 SFT of the tiny model -> $OUT/sft"
if [[ ! -f "$OUT/sft/hf_model/config.json" ]]; then
  "$PY" train.py experiment=sft_tiny callbacks=minimal hydra.run.dir="$OUT/sft"
fi

echo "== 2/3 CaPO negatives (generator: the SFT model) -> $OUT/negatives/pairs.jsonl"
if [[ ! -f "$OUT/negatives/pairs.jsonl" ]]; then
  "$PY" generate.py stage=capo_negatives \
    stage.generator.path="$OUT/sft/hf_model" stage.generator.batch_size=32 \
    stage.generator.sampling.max_new_tokens=48 \
    stage.output="$OUT/negatives/pairs.jsonl" hydra.run.dir="$OUT/negatives"
fi

echo "== 3/3 CaPO from the SFT model -> $OUT/capo"
"$PY" train.py experiment=capo_tiny model=hf model.pretrained="$OUT/sft/hf_model" \
  data.path="$OUT/negatives/pairs.jsonl" callbacks=minimal validate_after_fit=true \
  hydra.run.dir="$OUT/capo" "$@"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
m = json.loads((out / "capo" / "summary.json").read_text())["metrics"]
print(f"held-out rewards/accuracies: {m['val/rewards/accuracies']:.3f}  (val/loss {m['val/loss']:.4f})")
for k in sorted(k for k in m if k.startswith("val/rewards/accuracies/")):
    print(f"  {k.split('/')[-1]:>16}: {m[k]:.3f}")
EOF

if [[ "${BUNDLE:-0}" == "1" ]]; then
  "$PY" - "$OUT/negatives/pairs.jsonl" "$ROOT/data/capo/pairs.jsonl" "${BUNDLE_DIALOGUES:-120}" <<'EOF'
import json, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(src)]
groups = list(dict.fromkeys(r["group"] for r in rows))[:n]
keep = [r for r in rows if r["group"] in set(groups)]
for r in keep:  # the generator's path is machine-specific; name the recipe instead
    r["provenance"]["generator"] = "scripts/capo_tiny_pipeline.sh: sft_tiny hf_model"
with open(dst, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in keep)
print(f"bundled {len(keep)} pairs from {len(groups)} dialogues into {dst}")
EOF
fi
