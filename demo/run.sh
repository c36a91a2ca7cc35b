#!/usr/bin/env bash
# The ckpt demo: a live process is checkpointed, killed, restored, and carries on.
# Run as root from the repository root: bash demo/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (ckpt needs ptrace and clone3 set_tid)"; exit 1; fi
command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential; }
. .ci/toolchain.sh
need_rust

echo "== building ckpt (release)"
cargo build --release -q
CKPT=$PWD/target/release/ckpt
work=$(mktemp -d /tmp/ckpt-demo.XXXXXX)
trap 'kill -9 ${pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/counter" demo/counter.c

echo "== starting the workload"
# Only stdin/stdout/stderr: pipes a terminal or CI runner leaks would be refused by this ckpt.
(
  for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
  exec "$work/counter"
) > "$work/log" 2>&1 < /dev/null &
pid=$!
sleep 2
tail -n 2 "$work/log"

echo "== ckpt dump -t $pid -D $work/images"
# bash reports a background job killed by a signal ("Killed") on its own stderr whenever
# it notices, which reads like a failure: the shell's stderr is muted meanwhile, ckpt's
# goes to the terminal (fd 3).
exec 3>&2 2>/dev/null
"$CKPT" dump -t "$pid" -D "$work/images" 2>&3 || { exec 2>&3; exit 1; }
wait "$pid" || true
exec 2>&3 3>&-
kill -0 "$pid" 2>/dev/null && { echo "workload still alive?"; exit 1; }
echo "   the workload is gone; images:"
ls -l "$work/images" | sed 's/^/   /'
lines_before=$(wc -l < "$work/log")

echo "== ckpt restore -D $work/images -d"
"$CKPT" restore -D "$work/images" -d
sleep 2
echo "   after restore, the same pid carries on counting:"
tail -n +"$((lines_before + 1))" "$work/log" | head -n 4 | sed 's/^/   /'
grep -q CORRUPT "$work/log" && { echo "memory corrupted!"; exit 1; }
tail -n 1 "$work/log" | grep -q "pid $pid " || { echo "restored process is not running"; exit 1; }
echo "== demo passed: pid $pid survived a checkpoint, a kill and a restore"
