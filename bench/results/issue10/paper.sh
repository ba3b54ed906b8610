#!/bin/sh
# After run.sh: bench.dask_overhead twice more, and the paper protocol at K = 1 (both cores) and
# K = 8 on a local dask cluster (two single-threaded workers), 50 meta-iterations each, to time
# them after the allocator fix (the learned bits must equal those in k1_vs_k8_paper/).
set -eu
R=bench/results/issue10
M=../shared/data/mnist
log() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> "$R/log.txt"; }
log "start dask_overhead 2"
nice python -m bench.dask_overhead --repeats 5 --json "$R/dask_overhead_2.json" \
    > "$R/dask_overhead_2.txt" 2>&1
log "end dask_overhead 2"
for run in paper1 paper8dask; do
    extra=""; [ $run = paper8dask ] && extra="--meta-batch 8 --dask"
    rm -rf "$R/runs/$run"
    log "start $run"
    nice revlearn run schedules --paper --mnist "$M" $extra --out "$R/runs/$run" \
        > "$R/runs/$run.txt" 2>&1
    log "end $run"
done
log "start dask_overhead 3"
nice python -m bench.dask_overhead --repeats 5 --json "$R/dask_overhead_3.json" \
    > "$R/dask_overhead_3.txt" 2>&1
log "end dask_overhead 3"
