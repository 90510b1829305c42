#!/usr/bin/env bash
# The idle cost of many replicated partitions (issue 16): three brokers on 127.0.0.1, TOPICS
# topics of PARTITIONS partitions with replication 3, then each broker's RSS and CPU over WINDOW
# seconds of idleness, and the restart of broker 2 (SIGKILL, start again): seconds until it
# serves, then until every partition has a leader again, then the idle cost once more.
#
#   cargo build --release && benches/idle_cluster.sh            # 1,000 topics x 4 partitions
#   TOPICS=100 WINDOW=5 benches/idle_cluster.sh                  # a quick look
#
# Ports 19101-19103 (clients) and 17101-17103 (Raft); data in target/tmp/idle-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
STRATA=${STRATA:-target/release/strata}
TOPICS=${TOPICS:-1000}
PARTITIONS=${PARTITIONS:-4}
WINDOW=${WINDOW:-20}
DIR=${DIR:-target/tmp/idle-cluster}
PEERS=1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103
export STRATA_BROKER=http://127.0.0.1:19101,http://127.0.0.1:19102,http://127.0.0.1:19103

rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null || true' EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

start() { # node -> pid in pids[node-1], waits until it serves
  local n=$1 t0
  t0=$(now)
  "$STRATA" serve --data-dir "$DIR/$n" --listen "127.0.0.1:1910$n" --node-id "$n" \
    --peers "$PEERS" > "$DIR/out$n" 2>> "$DIR/log$n" &
  pids[$((n - 1))]=$!
  until grep -q "listening on" "$DIR/out$n" 2>/dev/null; do sleep 0.05; done
  echo "broker $n serves after $(since "$t0") s"
}

idle() { # RSS and CPU of each broker over WINDOW seconds
  local hz t0=() t1
  hz=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do t0+=("$(awk '{print $14+$15}' "/proc/$p/stat")"); done
  sleep "$WINDOW"
  for i in "${!pids[@]}"; do
    p=${pids[$i]}
    t1=$(awk '{print $14+$15}' "/proc/$p/stat")
    printf 'broker %d: rss %d MiB, cpu %s%% of a core\n' "$((i + 1))" \
      "$(( $(awk '/VmRSS/{print $2}' "/proc/$p/status") / 1024 ))" \
      "$(echo "scale=1; ($t1 - ${t0[$i]}) * 100 / $hz / $WINDOW" | bc)"
  done
}

leaderless() { # partitions without a leader, as broker 1 sees them
  "$STRATA" cluster status --output json 2>/dev/null |
    grep -c '"leader":null' || true
}

for n in 1 2 3; do start "$n"; done
t0=$(now)
seq 1 "$TOPICS" | xargs -P 4 -I{} "$STRATA" topic create "idle-{}" -p "$PARTITIONS" -r 3 > /dev/null
echo "created $TOPICS topics x $PARTITIONS partitions x 3 replicas in $(since "$t0") s"
sleep 5
echo "idle, $WINDOW s:"
idle

kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
t0=$(now)
start 2
until [ "$(leaderless)" = 0 ]; do sleep 0.2; done
echo "every partition has a leader $(since "$t0") s after broker 2 started again"
sleep 5
echo "idle after the restart, $WINDOW s:"
idle
