#!/usr/bin/env bash
# Runs `strata bench` against two builds in alternation, each on a fresh broker and with its own
# bench client, and prints one JSON line per run (docs/PERFORMANCE.md quotes these):
#   benches/before_after.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] > results.jsonl
# with ../shared/tools/disk-limit before and after on stderr. Needs ~2 GiB free in $WORK
# (default /tmp/strata-before-after).
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
work=${WORK:-/tmp/strata-before-after}
port=${PORT:-51300}
limit="$(dirname "$0")/../../shared/tools/disk-limit"
mkdir -p "$work"
[ -x "$limit" ] && "$limit" "$work" >&2
for round in $(seq "$rounds"); do
  for bin in "$before" "$after"; do
    dir="$work/data"; rm -rf "$dir"
    "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    for mode in "produce --fsync always --producers 4" "produce --fsync never --producers 1" \
      "consume --backlog-bytes 1GiB"; do
      # shellcheck disable=SC2086
      r=$("$bin" bench $mode --record-size 1024 --batch-size 1000 --duration 10s \
        --broker "http://127.0.0.1:$port" --output json 2>/dev/null | tail -1)
      echo "{\"round\":$round,\"bin\":\"$bin\",\"case\":\"$mode\",\"result\":${r:-null}}"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
[ -x "$limit" ] && "$limit" "$work" >&2
