#!/bin/sh
# The two-workers-against-two-threads comparison of run.sh ("ab") again, once the other
# engineer's benchmark had stopped (runs/ab2_*).
set -eu
R=bench/results/issue10
M=../shared/data/mnist
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> "$R/log.txt"; }
for r in 1 2 3; do
    for how in serial dask; do
        extra=""; [ $how = dask ] && extra="--dask"
        out="$R/runs/ab2_${how}_$r"; rm -rf "$out"
        log "start ab2 $how $r"
        /usr/bin/time -f "wall %e s" nice revlearn run schedules --paper --mnist "$M" \
            --meta-batch 8 --meta-iters 3 $extra --out "$out" > "$out.txt" 2>&1
        log "end ab2 $how $r"
    done
done
