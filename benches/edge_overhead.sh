#!/usr/bin/env bash
# What the edge's options cost, in one run on one machine: `strata bench` against one build in
# three configurations, alternating, each on a fresh broker:
#   plain      no TLS, no principals file, no metrics
#   tls+auth   TLS (a self-signed certificate from openssl) and a principals file, the bench
#              client presenting a superuser's token
#   metrics    --metrics-listen, scraped every second by curl meanwhile (Prometheus scrapes every
#              15-60 s: this is harsher)
# and prints one JSON line per run (docs/PERFORMANCE.md quotes these):
#   benches/edge_overhead.sh BINARY [ROUNDS] > results.jsonl
# Needs openssl and curl, and ~2 GiB free in $WORK (default /tmp/strata-edge-overhead).
set -euo pipefail
bin=$1 rounds=${2:-3}
work=${WORK:-/tmp/strata-edge-overhead}
port=${PORT:-51400} metrics_port=$((port + 1))
mkdir -p "$work"
# A CA and a server certificate it signs (rustls refuses a CA certificate as the server's own).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=strata bench CA" \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
  -CAcreateserial -days 1 -extfile "$work/server.ext" -out "$work/cert.pem" 2>/dev/null
pid= scraper=
trap '[ -n "$scraper" ] && kill "$scraper" 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
rm -f "$work/principals.json"
token=$("$bin" auth add bench --superuser --file "$work/principals.json")
for round in $(seq "$rounds"); do
  for config in plain tls+auth metrics; do
    dir="$work/data"; rm -rf "$dir"
    serve=(--data-dir "$dir" --listen "127.0.0.1:$port")
    client=(--broker "http://127.0.0.1:$port")
    case $config in
      tls+auth)
        serve+=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --auth-file "$work/principals.json")
        client=(--broker "https://127.0.0.1:$port" --tls-ca "$work/ca.pem" --token "$token") ;;
      metrics) serve+=(--metrics-listen "127.0.0.1:$metrics_port") ;;
    esac
    "$bin" serve "${serve[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    scraper=
    if [ "$config" = metrics ]; then
      (while sleep 1; do curl -s "http://127.0.0.1:$metrics_port/metrics" >/dev/null || true; done) &
      scraper=$!
    fi
    for mode in "produce --fsync always --producers 4" "produce --fsync never --producers 1" \
      "consume --backlog-bytes 1GiB"; do
      # shellcheck disable=SC2086
      # A failed run is a null result (its error on stderr), not the end of the series.
      r=$("$bin" bench $mode --record-size 1024 --batch-size 1000 --duration 10s \
        "${client[@]}" --output json | tail -1) || r=null
      echo "{\"round\":$round,\"config\":\"$config\",\"case\":\"$mode\",\"result\":${r:-null}}"
    done
    if [ -n "$scraper" ]; then kill "$scraper"; scraper=; fi
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    rm -rf "$dir"
  done
done
