#!/usr/bin/env bash
# Two regions on one machine: us-east (the source) and eu-west (the target). Mirrors the
# topic `orders` from us-east to eu-west (as `us-east.orders`), then fails the consumer
# group `billing` over to eu-west with its offsets translated, and shows where it
# resumes. Runs to completion and stops both brokers.
#
#   examples/two-regions/run.sh              build (release) and run
#   QUIVER=/path/to/quiver QUIVER_PLUGINS=/dir/with/wasm run.sh
#   PORT_BASE=18000 DATA=/tmp/regions run.sh ports PORT_BASE..+5, data in DATA
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -z "${QUIVER:-}" ] || [ -z "${QUIVER_PLUGINS:-}" ]; then
    (cd "$root" && cargo build --release -p quiver && bash plugins/build.sh >/dev/null)
    target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    QUIVER="${QUIVER:-$target/release/quiver}"
    QUIVER_PLUGINS="${QUIVER_PLUGINS:-$target/wasm32-wasip2/release}"
fi
base="${PORT_BASE:-18000}"
data="${DATA:-$here/data}"
east="127.0.0.1:$base" east_admin="127.0.0.1:$((base + 1))"
west="127.0.0.1:$((base + 3))" west_admin="127.0.0.1:$((base + 4))"
rm -rf "$data" && mkdir -p "$data"

pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM
# Each region is its own cluster, with its own cluster.id: loop prevention tells
# clusters apart by it.
"$QUIVER" serve --data-dir "$data/us-east" --kafka-listen "$east" --admin-listen "$east_admin" \
    --set cluster.listen="127.0.0.1:$((base + 2))" --set cluster.id=us-east >"$data/us-east.log" 2>&1 &
pids+=($!)
"$QUIVER" serve --data-dir "$data/eu-west" --kafka-listen "$west" --admin-listen "$west_admin" \
    --set cluster.listen="127.0.0.1:$((base + 5))" --set cluster.id=eu-west >"$data/eu-west.log" 2>&1 &
pids+=($!)

# Waits (up to 60 s) until the command succeeds.
until_ok() {
    for _ in $(seq 1 240); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "gave up waiting for: $*" >&2
    exit 1
}
until_ok "$QUIVER" topic list --bootstrap "$east"
until_ok "$QUIVER" topic list --bootstrap "$west"

echo "== us-east: topic orders, 3 partitions, 900 records"
"$QUIVER" topic create orders --partitions 3 --bootstrap "$east"
seq 1 900 | sed 's/^\(.*\)$/order-\1,{"id":\1}/' | "$QUIVER" produce orders --bootstrap "$east" --key-separator ,
echo "== us-east: group billing has processed the first 200 records of each partition"
"$QUIVER" group reset-offsets billing --topic orders --to-offset 200 --execute --bootstrap "$east"

echo "== eu-west: deploy the mirror plugin and mirror us-east"
"$QUIVER" plugin deploy mirror --kind connector --file "$QUIVER_PLUGINS/quiver_plugin_mirror.wasm" --admin "$west_admin"
"$QUIVER" mirror create from-us-east --source "$east" --source-alias us-east \
    --topics 'orders' --groups 'billing' --checkpoint-interval-ms 1000 --admin "$west_admin"

caught_up() {
    "$QUIVER" mirror describe from-us-east --json --admin "$west_admin" | python3 -c '
import json, sys
d = json.load(sys.stdin)
parts = ((d.get("report") or {}).get("topics") or {}).get("orders", {}).get("partitions", [])
sys.exit(0 if parts and sum(p["position"] for p in parts) >= 900 else 1)'
}
# A checkpoint translates the offsets the mirror has copied past; one taken while it was
# still copying covers only some partitions, so wait for one that covers all three.
checkpointed() {
    "$QUIVER" mirror checkpoints from-us-east --json --admin "$west_admin" | python3 -c '
import json, sys
billing = json.load(sys.stdin)["groups"].get("billing", {})
sys.exit(0 if len(billing.get("offsets", [])) == 3 else 1)'
}
until_ok caught_up
until_ok checkpointed
"$QUIVER" mirror describe from-us-east --admin "$west_admin"
echo
echo "== eu-west: the first records of us-east.orders, with where they came from"
"$QUIVER" consume us-east.orders --partition 0 --max-messages 3 --format '%p %o %k %v %h\n' --bootstrap "$west"

echo "== us-east is lost: fail group billing over to eu-west"
"$QUIVER" mirror failover from-us-east --group billing --admin "$west_admin"
echo
echo "== eu-west: group billing resumes where it was in us-east"
"$QUIVER" group describe billing --bootstrap "$west"
