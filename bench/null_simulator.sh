#!/bin/sh
# A SHIELD-HIT12A stand-in that does almost nothing, for measuring the platform's own overhead
# (bench/runner_bench.py): same command line (`-N <seed> <workdir>`), the same log lines as
# the real binary (the runner's progress parser reads them), and one estimator file. POSIX sh
# with builtins only, so a task costs one fork+exec, not an interpreter start-up. A card
# `SLEEP <seconds>` in beam.dat makes it wait that long first (with /bin/sleep, a child in
# its process group), for the cancel measurement.
set -eu
[ "$1" = "-N" ] || { echo "usage: $0 -N <seed> <workdir>" >&2; exit 2; }
seed=$2
workdir=$3
nstat=0
pause=0
while read -r card value rest; do
  case "$card" in
    NSTAT) nstat=$value ;;
    SLEEP) pause=$value ;;
  esac
done < "$workdir/beam.dat"
echo " Requested number of primaries NSTAT        :  $nstat"
[ "$pause" = "0" ] || sleep "$pause"
echo "Primary particle no.   $nstat ETR:  0 hour(s)  0 minute(s)  0 second(s)"
echo "Run time:  0 hour(s)  0 minute(s)  0 second(s)"
cat > "$workdir/dose_$(printf %04d "$seed").json" <<JSON
{"name": "dose", "metadata": {"seed": "$seed"}, "pages": [{"dimensions": 1,
 "metadata": {"page_number": 0, "name": "DOSE"},
 "data": {"name": "DOSE", "unit": "MeV/g/prim", "values": [1.0, 2.0, 3.0]},
 "axis_dim1": {"name": "Position (Z)", "unit": "cm", "values": [0.5, 1.5, 2.5]}}]}
JSON
