#!/usr/bin/env bash
# Every CamVid measurement of BENCHMARKS.md, in the order the open comparisons need them, resumable.
#
#   CAMVID=/path/to/CamVid OUT=runs/board benchmarks/camvid_board.sh [STAGE ...]
#   OUT=runs/board benchmarks/camvid_board.sh results
#
# Each stage is one or more `tailseg matrix` calls (two runs at a time, one thread each); a matrix skips the
# runs whose report exists for the same experiment and resumes the ones that stopped, so running the script
# again, after an interruption or in another session, continues where it stopped. Stages (default: all, in
# this order):
#   finetune-val   the fine-tuning verdict's methods (experiments/camvid/finetune/, 3 seeds) on val, from the
#                  final weights of BASE seed 0 of scratch-val (which it trains first if needed)
#   finetune-0006R0  the same on the held-out video 0006R0, from a pretraining that never saw it (BASE seed 0 of
#                  scratch-0006R0, trained first if needed)
#   scratch-val    the board's methods (SCRATCH below) from random initialisation, 3 seeds, on val
#   scratch-0006R0 the same methods, trained on train + val without video 0006R0, validated on 0006R0's 101 frames
#   scratch-val-new  the methods added since (SCRATCH_NEW) as scratch-val, into the same folder: with it,
#                  every config of experiments/camvid/ on val
#   scratch-0006R0-new  the same methods on the held-out video, as scratch-0006R0 and into its folder: val's
#                  verdicts need the check on a video the model never saw
#   synthetic      every config of experiments/synthetic/, 3 seeds
#   finetune-extra the other fine-tuning configs (the methods of 2021-2023, compound losses), val and 0006R0
#   restore        not a training: the reverse of `results`, for a new machine or a lost OUT: copies the reports of
#                  benchmarks/results/ back into OUT's stage folders, so the matrices count those runs done and train
#                  only the rest (no checkpoints come back: a fine-tuning stage whose pretraining is missing says so)
#   results        not a training: copies the finished reports (report.json and its per-image file, if any; no
#                  checkpoints) of every stage folder into benchmarks/results/ (RESULTS) and writes each folder's
#                  comparison.md with `tailseg compare --reference base`, the val folders' with the held-out
#                  video's figures beside them (`--across 0006R0=...`); not part of the default order
# Times on a 2-core CPU, two at a time: about 26 minutes a pair from scratch, 15 a pair of fine-tunes, 8 a pair on
# the synthetic data set. Tables: `tailseg compare $OUT/<stage folder>`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/board}
JOBS=${JOBS:-2}
TAILSEG=${TAILSEG:-tailseg}
SEEDS=(0 1 2)
ROOTS=(--data.train.init_args.root "${CAMVID:-}" --data.val.init_args.root "${CAMVID:-}")
HELD_OUT=(--data.train.init_args.split train+val --data.train.init_args.exclude_videos "[0006R0]"
          --data.val.init_args.split train --data.val.init_args.videos "[0006R0]")
# The from-scratch board, in the order the comparisons need them: the papers' methods first (the fine-tuning
# verdict compares them with their from-scratch figures), then the peers, then the methods added since (each
# group on val and on the held-out video). The methods added since go in the order of their claims (those above
# BASE by the most on val first; LMP + Lovász, the top of the synthetic board, beside the other compound losses),
# so the held-out check of the largest claims comes first.
SCRATCH=(base lmp tce_class stce base_plus lmp_only focal median_freq rare_class class_balanced repeat_factor
         lovasz dice)
SCRATCH_NEW=(ce_lovasz ce_dice lmp_lovasz logit_adjust class_balanced_images ohem blv tce_image recall bootstrap)
# The fine-tuning verdict's methods; the others of experiments/camvid/finetune/ come last (stage finetune-extra).
FINETUNE=(base base_plus lmp tce_class stce rare_class class_balanced lmp_only)
FINETUNE_EXTRA=(logit_adjust blv recall ce_lovasz ce_dice lmp_lovasz)

matrix() {  # matrix OUT_DIR CONFIG... -- OVERRIDES...
    : "${CAMVID:?set CAMVID to the CamVid folder (train/, trainannot/, val/, valannot/)}"
    local out=$1; shift
    "$TAILSEG" matrix "$@" --seeds "${SEEDS[@]}" --out "$out" --jobs "$JOBS" --no-compare -- "${ROOTS[@]}" "${EXTRA[@]}"
}

# Where `results` puts each stage's reports (the folders BENCHMARKS.md cites).
declare -A RESULT_DIRS=([finetune-val]=camvid-finetune/val [finetune-0006R0]=camvid-finetune/0006R0
                        [scratch-val]=camvid-runs/val [scratch-0006R0]=camvid-runs/0006R0 [synthetic]=synthetic)

results() {  # copy every finished seed's report of each stage folder, then one comparison per folder
    local results=${RESULTS:-benchmarks/results} stage dest report run copy held_out
    local -a filled=()
    shopt -s nullglob
    for stage in finetune-val finetune-0006R0 scratch-val scratch-0006R0 synthetic; do
        dest=$results/${RESULT_DIRS[$stage]}
        for report in "$OUT/$stage"/*/seed*/report.json; do
            run=${report%/report.json}
            copy=$dest/${run#"$OUT/$stage/"}
            mkdir -p "$copy"
            cp "$report" "$run"/*.per_image.npz "$copy/"
        done
        [[ -d $dest ]] && filled+=("$stage")
    done
    for stage in "${filled[@]}"; do
        dest=$results/${RESULT_DIRS[$stage]} held_out=()
        if [[ $stage == *-val && " ${filled[*]} " == *" ${stage%-val}-0006R0 "* ]]; then
            held_out=(--label val --across "0006R0=$results/${RESULT_DIRS[${stage%-val}-0006R0]}")
        fi
        echo "$stage -> $dest" >&2
        "$TAILSEG" compare "$dest" --reference base "${held_out[@]}" --output "$dest/comparison.md"
    done
}

restore() {  # the reports of benchmarks/results/ back into OUT's stage folders (existing reports are kept)
    local results=${RESULTS:-benchmarks/results} stage src report run
    shopt -s nullglob
    for stage in "${!RESULT_DIRS[@]}"; do
        src=$results/${RESULT_DIRS[$stage]}
        for report in "$src"/*/seed*/report.json; do
            run=$OUT/$stage/${report#"$src/"} run=${run%/report.json}
            [[ -f $run/report.json ]] && continue
            mkdir -p "$run"
            cp "$report" "${report%/report.json}"/*.per_image.npz "$run/"
        done
    done
}

pretrained() {  # pretrained SCRATCH_DIR: the final checkpoint of BASE seed 0 there (trained first if missing)
    local dir=$1 report="$1/base/seed0/report.json"
    if [[ ! -f $report ]]; then
        : "${CAMVID:?set CAMVID to the CamVid folder (train/, trainannot/, val/, valannot/)}"
        "$TAILSEG" matrix experiments/camvid/base.yaml --seeds 0 --out "$dir" --jobs 1 --no-compare -- \
            "${ROOTS[@]}" "${EXTRA[@]}" >&2
    fi
    if [[ ! -f $report ]]; then
        echo "no $report after training BASE seed 0 there: see $dir/base/seed0/log.txt" >&2
        return 1
    fi
    local checkpoint
    checkpoint=$("${PYTHON:-python3}" -c "import json, sys; print(json.load(open(sys.argv[1]))['checkpoint'])" "$report")
    if [[ ! -f $checkpoint ]]; then
        echo "$report names the checkpoint $checkpoint, which is not there (a report restored from" \
             "benchmarks/results/ keeps no weights): move $dir/base/seed0 aside to train the pretraining again" >&2
        return 1
    fi
    echo "$checkpoint"
}

configs() {  # configs FOLDER NAME...: the config files of the names that exist in FOLDER
    local folder=$1; shift
    for name in "$@"; do [[ -f $folder/$name.yaml ]] && echo "$folder/$name.yaml"; done
}

stage() {
    case $1 in
        scratch-val) EXTRA=(); mapfile -t files < <(configs experiments/camvid "${SCRATCH[@]}")
            matrix "$OUT/scratch-val" "${files[@]}" ;;
        scratch-val-new) EXTRA=(); mapfile -t files < <(configs experiments/camvid "${SCRATCH_NEW[@]}")
            matrix "$OUT/scratch-val" "${files[@]}" ;;
        scratch-0006R0) EXTRA=("${HELD_OUT[@]}"); mapfile -t files < <(configs experiments/camvid "${SCRATCH[@]}")
            matrix "$OUT/scratch-0006R0" "${files[@]}" ;;
        scratch-0006R0-new) EXTRA=("${HELD_OUT[@]}"); mapfile -t files < <(configs experiments/camvid "${SCRATCH_NEW[@]}")
            matrix "$OUT/scratch-0006R0" "${files[@]}" ;;
        finetune-val) EXTRA=(); local start; start=$(pretrained "$OUT/scratch-val")
            EXTRA=(--model.init_from "$start"); mapfile -t files < <(configs experiments/camvid/finetune "${FINETUNE[@]}")
            matrix "$OUT/finetune-val" "${files[@]}" ;;
        finetune-0006R0) EXTRA=("${HELD_OUT[@]}"); local start; start=$(pretrained "$OUT/scratch-0006R0")
            EXTRA=("${HELD_OUT[@]}" --model.init_from "$start")
            mapfile -t files < <(configs experiments/camvid/finetune "${FINETUNE[@]}")
            matrix "$OUT/finetune-0006R0" "${files[@]}" ;;
        finetune-extra) EXTRA=(); local start; start=$(pretrained "$OUT/scratch-val")
            EXTRA=(--model.init_from "$start"); mapfile -t files < <(configs experiments/camvid/finetune "${FINETUNE_EXTRA[@]}")
            matrix "$OUT/finetune-val" "${files[@]}"
            EXTRA=("${HELD_OUT[@]}"); start=$(pretrained "$OUT/scratch-0006R0")
            EXTRA=("${HELD_OUT[@]}" --model.init_from "$start")
            matrix "$OUT/finetune-0006R0" "${files[@]}" ;;
        synthetic) "$TAILSEG" matrix experiments/synthetic/*.yaml --seeds "${SEEDS[@]}" --out "$OUT/synthetic" \
            --jobs "$JOBS" --no-compare ;;
        results) results ;;
        restore) restore ;;
        *) echo "unknown stage $1 (finetune-val, finetune-0006R0, scratch-val, scratch-0006R0, scratch-val-new, scratch-0006R0-new," \
             "synthetic, finetune-extra," \
             "results, restore)" >&2
            exit 2 ;;
    esac
}

for s in "${@:-finetune-val finetune-0006R0 scratch-val scratch-0006R0 scratch-val-new scratch-0006R0-new synthetic finetune-extra}"; do
    for one in $s; do stage "$one"; done
done
