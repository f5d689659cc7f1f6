#!/usr/bin/env bash
# Starts a three-broker Quiver cluster on this machine, waits until it has formed,
# and prints its status. Ctrl-C stops all three (a controlled shutdown each).
#
#   examples/three-node/run.sh            build (release) and run
#   QUIVER=/path/to/quiver run.sh         use an existing binary
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ -z "${QUIVER:-}" ]; then
    cargo build --release -p quiver
    QUIVER="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/quiver"
fi
if [ ! -f certs/ca.pem ]; then
    "$QUIVER" cluster certs --cluster-id three-node --brokers 1,2,3 --out certs
fi
mkdir -p data
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap stop EXIT INT TERM
for i in 1 2 3; do
    "$QUIVER" serve --config "node$i.toml" >"data/node$i.log" 2>&1 &
    pids+=($!)
done
echo "waiting for the cluster to form (logs in data/node*.log)"
for _ in $(seq 1 120); do
    if "$QUIVER" cluster status --admin 127.0.0.1:9144 --json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["controller"] is not None and sum(not b["fenced"] for b in s["brokers"]) == 3 else 1)'; then
        "$QUIVER" cluster status --admin 127.0.0.1:9144
        echo
        echo "bootstrap servers: 127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392"
        echo "try: $QUIVER topic create orders --partitions 6 --bootstrap 127.0.0.1:9192"
        wait
        exit 0
    fi
    sleep 0.5
done
echo "the cluster did not form in 60 s; see data/node*.log" >&2
exit 1
