#!/usr/bin/env bash
# The CamVid method comparison of BENCHMARKS.md: every METHOD:SEED job trains
# experiments/camvid/METHOD.yaml with seed_everything SEED into OUT/METHOD/seedSEED, JOBS at a time with
# the machine's cores split between them (two jobs with one thread each on a 2-core machine). A job whose
# report.json exists is skipped and an interrupted one resumes from its last.ckpt, so the script can be
# run again after an interruption.
#
#   CAMVID=../shared/data/camvid OUT=runs/camvid-methods benchmarks/camvid_methods.sh base:0 lmp:0 base:1 ...
#
# Then: tailseg compare base=OUT/base/seed0 base=OUT/base/seed1 lmp=OUT/lmp/seed0 ... --sort frequency
set -euo pipefail
: "${CAMVID:?set CAMVID to the CamVid folder (train/, trainannot/, val/, valannot/)}"
OUT=${OUT:-runs/camvid-methods}
JOBS=${JOBS:-2}
THREADS=${THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))}
PY=${PY:-.venv/bin/python}

run_one() {
  local method=${1%%:*} seed=${1##*:}
  local dir="$OUT/$method/seed$seed"
  if [[ -f "$dir/report.json" ]]; then echo "skip $method seed $seed (done)"; return; fi
  mkdir -p "$dir"
  local start=$SECONDS
  OMP_NUM_THREADS=$THREADS "$PY" -m tailseg fit --config "experiments/camvid/$method.yaml" \
    --seed_everything "$seed" --trainer.default_root_dir "$dir" --report_path "$dir/report.json" --ckpt_path last \
    --data.train.init_args.root "$CAMVID" --data.val.init_args.root "$CAMVID" >"$dir/log.txt" 2>&1
  echo "$method seed $seed: $(( SECONDS - start )) s" | tee "$dir/wall_time.txt"
}
export -f run_one
export OUT THREADS PY CAMVID
printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
