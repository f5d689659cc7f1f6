#!/usr/bin/env bash
# The starter partitioner from source to placed traffic, on one machine: builds this
# crate as a WebAssembly component, starts a single-node broker, deploys the component
# as the plugin `regions` (and shows a bad configuration being refused), creates the
# topic `orders` with 6 partitions placed by it, then sends keyed orders two ways:
#
#   - HTTP produce (records without a partition: the broker asks the plugin), and
#   - kcat, a Kafka client, into `orders.ingest`; Kafka clients choose partitions
#     themselves, so a `repartition` transform copies every record into `orders`,
#     where the plugin places it.
#
# It then reads `orders` back with kcat, prints which keys landed on which partition and
# checks what the plugin promises: all the orders of one region share one partition.
# Exits non-zero if they do not. Stops the broker however it ends. Needs kcat and curl.
#
#   examples/custom-partitioner/run.sh          build (release) and run
#   QUIVER=/path/to/quiver QUIVER_PLUGINS=/dir/with/wasm run.sh
#                                               use an existing broker binary and
#                                               built-in plugins (the example itself is
#                                               always built, as you would build yours)
#   PORT_BASE=18200 DATA=/tmp/partitioner run.sh ports PORT_BASE..+2, data in DATA
#   CARGO_TARGET_DIR=...                        honoured by every build
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
for tool in kcat curl python3; do
    command -v "$tool" >/dev/null || { echo "this example needs $tool" >&2; exit 1; }
done
base="${PORT_BASE:-18200}"
data="${DATA:-$here/data}"
kafka="127.0.0.1:$base" admin="127.0.0.1:$((base + 1))"

echo "== build the partitioner component (cargo build --release --target wasm32-wasip2)"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
(cd "$here" && cargo build --release --target wasm32-wasip2)
# Inside this repository the crate is a workspace member: the component lands in the
# workspace's target directory ($CARGO_TARGET_DIR if set), which cargo reports.
target="$(cd "$here" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
wasm="$target/wasm32-wasip2/release/custom_partitioner.wasm"
ls -l "$wasm"
if [ -z "${QUIVER:-}" ]; then
    (cd "$root" && cargo build --release -p quiver)
    QUIVER="$target/release/quiver"
fi
if [ -z "${QUIVER_PLUGINS:-}" ]; then
    (cd "$root" && cargo build --release --target wasm32-wasip2 -p quiver-plugin-repartition)
    QUIVER_PLUGINS="$target/wasm32-wasip2/release"
fi

rm -rf "$data" && mkdir -p "$data"
pid=""
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap stop EXIT INT TERM
echo "== start a broker: Kafka $kafka, admin API $admin, data in $data"
"$QUIVER" serve --data-dir "$data/broker" --kafka-listen "$kafka" --admin-listen "$admin" \
    --set cluster.listen="127.0.0.1:$((base + 2))" >"$data/broker.log" 2>&1 &
pid=$!
export QUIVER_BOOTSTRAP="$kafka" QUIVER_ADMIN="$admin"

# Waits (up to 60 s) until the command succeeds.
until_ok() {
    for _ in $(seq 1 240); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the broker exited; its log:" >&2
            tail -20 "$data/broker.log" >&2
            exit 1
        fi
        sleep 0.25
    done
    echo "gave up waiting for: $*" >&2
    exit 1
}
until_ok curl -sf "http://$admin/health"
until_ok "$QUIVER" topic list

echo "== deploy it as the partitioner plugin 'regions'"
"$QUIVER" plugin deploy regions --kind partitioner --file "$wasm" --config separator=:
echo "== a bad configuration is refused, and version 1 keeps serving"
if "$QUIVER" plugin deploy regions --kind partitioner --file "$wasm" --config separator=:: 2>"$data/refused.txt"; then
    echo "a two-byte separator was accepted: init should have refused it" >&2
    exit 1
fi
cat "$data/refused.txt"
"$QUIVER" plugin list

echo "== topic orders: 6 partitions, placed by 'regions'"
"$QUIVER" topic create orders --partitions 6 --config partitioner=regions

regions=(eu us apac latam)
echo "== HTTP produce: 12 orders keyed <region>:<id>, and 6 without a key"
records=$(python3 - "${regions[@]}" <<'PY'
import json, sys
regions = sys.argv[1:]
keyed = [{"key": f"{regions[i % len(regions)]}:{1000 + i}", "value": json.dumps({"order": 1000 + i})}
         for i in range(12)]
unkeyed = [{"value": json.dumps({"order": 2000 + i})} for i in range(6)]
print(json.dumps({"records": keyed + unkeyed}))
PY
)
curl -sf -XPOST -H 'content-type: application/json' --data-binary "$records" \
    "http://$admin/v1/topics/orders/records" >"$data/http-produce.json"
python3 -c 'import json,sys; print("acknowledged", len(json.load(open(sys.argv[1]))["offsets"]), "records")' \
    "$data/http-produce.json"

echo "== Kafka clients choose partitions themselves: kcat writes 12 orders to orders.ingest,"
echo "   and a repartition transform copies them into orders, where 'regions' places them"
"$QUIVER" plugin deploy repartition --kind transform --file "$QUIVER_PLUGINS/quiver_plugin_repartition.wasm"
"$QUIVER" topic create orders.ingest --partitions 6
for i in $(seq 0 11); do
    printf '%s:%s|{"order":%s}\n' "${regions[$((i % 4))]}" $((3000 + i)) $((3000 + i))
done | kcat -b "$kafka" -P -t orders.ingest -K '|'
"$QUIVER" transform deploy --name place-orders --plugin repartition --input orders.ingest --output orders
copied() {
    "$QUIVER" transform describe place-orders --json |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["records_out"] >= 12 else 1)'
}
until_ok copied
echo "where kcat put them in orders.ingest (librdkafka's own partitioner):"
kcat -b "$kafka" -C -t orders.ingest -e -q -f '%p %k\n' | python3 -c '
import collections, sys
seen = collections.defaultdict(set)
for line in sys.stdin:
    partition, key = line.split()
    seen[key.split(":")[0]].add(int(partition))
for region, parts in sorted(seen.items()):
    print(f"  {region:<6} partitions {sorted(parts)}")'

echo "== orders, read back with kcat: the keys on each partition"
kcat -b "$kafka" -C -t orders -e -q -f '%p\t%k\n' >"$data/orders.tsv"
python3 - "$data/orders.tsv" "${regions[@]}" <<'PY'
import collections, sys

path, regions = sys.argv[1], sys.argv[2:]
keys = collections.defaultdict(list)  # partition -> keys, in offset order
for line in open(path):
    partition, key = line.rstrip("\n").split("\t")
    keys[int(partition)].append(key)
for partition in range(6):
    shown = " ".join(k or "(no key)" for k in keys[partition]) or "-"
    print(f"partition {partition}: {shown}")

problems = []
total = sum(len(v) for v in keys.values())
if total != 30:
    problems.append(f"read {total} records from orders, expected 30 (18 by HTTP, 12 copied)")
print("== check: the orders of each region share one partition")
placed = {}
for region in regions:
    parts = sorted({p for p, ks in keys.items() for k in ks if k.split(":")[0] == region})
    count = sum(1 for ks in keys.values() for k in ks if k.split(":")[0] == region)
    print(f"{region}: {count} orders on partition{'s' if len(parts) != 1 else ''} "
          f"{', '.join(map(str, parts))}")
    if count != 6:
        problems.append(f"{region}: {count} orders, expected 6")
    if len(parts) != 1:
        problems.append(f"{region}: orders on partitions {parts}, expected one")
    else:
        placed[region] = parts[0]
if len(placed) == len(regions) and len(set(placed.values())) < 2:
    problems.append(f"every region on one partition ({placed}): the regions were not hashed")
unkeyed = sorted(p for p, ks in keys.items() for k in ks if not k)
print(f"orders without a key: partitions {unkeyed}")
if unkeyed != list(range(6)):
    problems.append(f"keyless orders on partitions {unkeyed}, expected one on each of 0..5")
if problems:
    print("FAILED: " + "; ".join(problems))
    sys.exit(1)
print("OK: every region's orders are on one partition, keyless orders rotate")
PY

echo "== what the broker reports about the plugin"
"$QUIVER" plugin describe regions
