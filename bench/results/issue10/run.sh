#!/bin/sh
# The measurements behind docs/distributed.md "Measured" (issue 10), in the order they ran.
# Run from the repository root with the venv active: sh bench/results/issue10/run.sh [part]
# part: overhead | ab | equal (default: all three). Every command is nice'd; log.txt records the
# UTC time and the load average (1, 5, 15 min) before and after each.
set -eu
R=bench/results/issue10
M=../shared/data/mnist
mkdir -p "$R/runs"
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> "$R/log.txt"; }
part=${1:-all}

if [ "$part" = all ] || [ "$part" = overhead ]; then
    log "start dask_overhead"
    nice python -m bench.dask_overhead --repeats 5 --json "$R/dask_overhead.json" \
        > "$R/dask_overhead.txt" 2>&1
    log "end dask_overhead"
fi

if [ "$part" = all ] || [ "$part" = ab ]; then
    # A meta-batch of 8, 3 meta-iterations of the paper protocol: one process on two threads
    # against two single-threaded dask workers, alternately, three times each.
    for r in 1 2 3; do
        for how in serial dask; do
            extra=""; [ $how = dask ] && extra="--dask"
            out="$R/runs/ab_${how}_$r"; rm -rf "$out"
            log "start ab $how $r"
            /usr/bin/time -f "wall %e s" nice revlearn run schedules --paper --mnist "$M" \
                --meta-batch 8 --meta-iters 3 $extra --out "$out" > "$out.txt" 2>&1
            log "end ab $how $r"
        done
    done
fi

if [ "$part" = all ] || [ "$part" = equal ]; then
    # 1x: the main job (revlearn run, 30 meta-iterations, both cores); 10x its printed time.
    rm -rf "$R/runs/main_1"
    log "start main_1"
    nice revlearn run --mnist "$M" --out "$R/runs/main_1" > "$R/runs/main_1.txt" 2>&1
    log "end main_1"
    T1=$(sed -n 's/^30 meta-iterations in \([0-9.]*\) s this session.*/\1/p' "$R/runs/main_1.txt")
    T10=$(python -c "print(10 * $T1)")
    echo "$T1 $T10" > "$R/budget.txt"
    for sampler in cmaes tpe-multivariate; do
        log "start optuna $sampler ${T10}s at ${T1}s"
        nice python -m bench.optuna_baseline --sampler $sampler --space 24 --seconds "$T10" \
            --at "$T1" --mnist "$M" --json "$R/optuna_$sampler.json" > "$R/optuna_$sampler.txt" 2>&1
        log "end optuna $sampler"
        # revlearn between the two searches, in the same minutes
        if [ $sampler = cmaes ]; then
            rm -rf "$R/runs/k1_decay30"
            log "start k1_decay30"
            nice revlearn run --mnist "$M" --meta-iters 300 --meta-step-decay 30 \
                --out "$R/runs/k1_decay30" > "$R/runs/k1_decay30.txt" 2>&1
            log "end k1_decay30"
        fi
    done
    rm -rf "$R/runs/k4_decay10"
    log "start k4_decay10"
    nice revlearn run --mnist "$M" --meta-iters 75 --meta-batch 4 --meta-step-decay 10 \
        --out "$R/runs/k4_decay10" > "$R/runs/k4_decay10.txt" 2>&1
    log "end k4_decay10"
    rm -rf "$R/runs/k1_const"
    log "start k1_const"
    nice revlearn run --mnist "$M" --meta-iters 300 --out "$R/runs/k1_const" \
        > "$R/runs/k1_const.txt" 2>&1
    log "end k1_const"
    rm -rf "$R/runs/main_2"
    log "start main_2"
    nice revlearn run --mnist "$M" --out "$R/runs/main_2" > "$R/runs/main_2.txt" 2>&1
    log "end main_2"
fi
