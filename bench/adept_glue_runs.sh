#!/usr/bin/env bash
# Short CPU runs of PT, DePT and ADePT at equal budget with the packaged MiniLM encoder on the
# real RTE, MRPC and SST-2 files: fit (30 steps of 8 rows), then test on the held-out test rows.
# Usage: bench/adept_glue_runs.sh GLUE_TEXT_DIR   (a folder with rte/, mrpc/, sst2/ inside)
set -euo pipefail
data=${1:?give the folder that holds rte/, mrpc/ and sst2/}
cli=${ADAPTGROUND:-.venv/bin/adaptground}
for task in rte mrpc sst2; do
  for method in pt dept adept; do
    root=runs/adept_minilm/${task}_${method}
    rm -rf "$root"
    common=(--config configs/adept/minilm_glue.yaml --data.init_args.task "$task"
      --data.init_args.train_path "$data/$task/train.tsv" --data.init_args.validation_path "$data/$task/dev.tsv"
      --model.init_args.method "$method" --trainer.default_root_dir "$root")
    start=$(date +%s)
    "$cli" fit "${common[@]}" > "$root.fit.log" 2>&1
    "$cli" test "${common[@]}" --ckpt_path "$root/lightning_logs/version_0/checkpoints/last.ckpt" > "$root.test.log" 2>&1
    end=$(date +%s)
    echo "$task $method seconds=$((end - start))"
  done
done
