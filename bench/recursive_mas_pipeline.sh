#!/usr/bin/env bash
# RecursiveMAS: train the default system's links, then every measurement, in ONE bench slot (run it as
#   nohup bench-slot bash bench/recursive_mas_pipeline.sh > runs/rmas/pipeline.log 2>&1 &
# ). Each step resumes or skips what is done, so rerunning after a kill continues.
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${OUT:-runs/rmas}
N_HELD=${N_HELD:-12}
N_GSM=${N_GSM:-8}
mkdir -p "$OUT"
step() { echo "=== $(date +%T) $*"; }

step "train-links (text-mas trajectories on training templates, then stages 1 and 2)"
recursa train-links --out "$OUT/links" --problems "${PROBLEMS:-24}" --steps "${STEPS:-30}" \
    --max-minutes "${MINUTES:-12}" --bf16 || exit 1
cp "$OUT"/links/inner-*.safetensors "$OUT"/links/outer-*.safetensors src/recursa/systems/default-links/
cp "$OUT"/links/losses.png "$OUT"/links/losses.json src/recursa/systems/default-links/ 2>/dev/null

step "held-out templates: JSONL"
python -c "
from pathlib import Path
from recursa.link_data import gsm_symbolic_split, write_tasks
write_tasks(gsm_symbolic_split('eval', $N_HELD), Path('$OUT/heldout.jsonl'))"

step "bench held-out templates, core ($N_HELD)"
recursa bench --task "$OUT/heldout.jsonl" --methods "recursive-text-mas[rounds=3],recursive-mas[rounds=3],\
recursive-mas[rounds=1],single" --batch-size 12 --out "$OUT/bench-heldout-core"

step "KV cache vs re-prefill"
[ -s "$OUT/kv.md" ] || python bench/recursive_mas_kv.py --steps 32 64 --batch 4 > "$OUT/kv.md"

step "random vs ridge start"
[ -s "$OUT/init.md" ] || python bench/recursive_mas_init.py --trajectories "$OUT/links/trajectories.jsonl" \
    --links "$OUT/links" --steps 6 > "$OUT/init.md"

step "bench held-out templates, other rounds ($N_HELD)"
recursa bench --task "$OUT/heldout.jsonl" --methods "recursive-text-mas[rounds=1],recursive-mas[rounds=2],\
recursive-text-mas[rounds=2],latent-mas" --batch-size 12 --out "$OUT/bench-heldout-rounds"

step "bench GSM8K ($N_GSM)"
recursa bench --task gsm8k --limit "$N_GSM" --methods "recursive-text-mas[rounds=3],recursive-mas[rounds=3],single" \
    --batch-size 8 --out "$OUT/bench-gsm8k"
step done
