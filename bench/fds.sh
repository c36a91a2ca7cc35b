#!/bin/bash
# The per-fd cost of ckpt: bench/workloads/manyfds.c with N fds, dumped and restored.
# usage: bench/fds.sh CKPT N ROUNDS
# Prints per round: dump total_ms (ckpt's log), dump CPU ms (perf task-clock), restore
# wall ms, restore CPU ms (ckpt itself; the seeds become the restored process and are not
# counted). The per-fd figure is the difference of N=909 and N=9, divided by 9 (per 100).
# Needs root, cc and perf.
set -e
CKPT=$(realpath "$1"); N=$2; R=${3:-1}
src=$(realpath "$(dirname "$0")/workloads/manyfds.c")
work=$(mktemp -d /var/tmp/ckpt-fds.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/manyfds" "$src"
for r in $(seq "$R"); do
  w="$work/r$r"; mkdir "$w"; cd "$w"
  setsid "$work/manyfds" "$N" </dev/null >out 2>&1 &
  pid=$!
  while ! grep -q ready out 2>/dev/null; do sleep 0.01; done
  perf stat -x, -e task-clock -o dstat "$CKPT" -v --log-file dump.log dump -t $pid -D img
  wait $pid 2>/dev/null || true
  t1=$(date +%s%N)
  perf stat -x, -e task-clock -o rstat "$CKPT" restore -D img -d >/dev/null
  t2=$(date +%s%N)
  d=$(grep -o 'total_ms=[0-9.]*' dump.log | cut -d= -f2)
  dc=$(grep task-clock dstat | cut -d, -f1); rc=$(grep task-clock rstat | cut -d, -f1)
  echo "$d $dc $(( (t2 - t1) / 10000 )) $rc" | awk '{printf "%s %.1f %.1f %.1f\n", $1, $2, $3/100, $4}'
  kill -9 $pid; sleep 0.05; cd "$work"; rm -rf "$w"
done
