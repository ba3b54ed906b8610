#!/bin/sh
# The two Optuna searches again, after common.losses held the BLAS to one thread (its validation
# loss had taken 1.0 s of each 1.5 s trial; optuna_*_slow_eval.* are the searches before).
set -eu
R=bench/results/issue10
M=../shared/data/mnist
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> "$R/log.txt"; }
T1=$(cut -d' ' -f1 "$R/budget.txt")
T10=$(cut -d' ' -f2 "$R/budget.txt")
for sampler in cmaes tpe-multivariate; do
    log "start optuna $sampler ${T10}s at ${T1}s (fixed evaluation)"
    nice python -m bench.optuna_baseline --sampler $sampler --space 24 --seconds "$T10" \
        --at "$T1" --mnist "$M" --json "$R/optuna_$sampler.json" > "$R/optuna_$sampler.txt" 2>&1
    log "end optuna $sampler"
done
