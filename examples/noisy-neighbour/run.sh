#!/usr/bin/env bash
# Two tenants on one broker, one of them noisy. acme and globex each get a namespace
# and a SCRAM user; acme is held to 2 MB/s of produce. acme then sends 20 MB as fast as
# it can while globex goes about its business: acme gets its quota, globex does not
# notice. Runs to completion and stops the broker. Needs kcat (the tenants' client).
#
#   examples/noisy-neighbour/run.sh          build (release) and run
#   QUIVER=/path/to/quiver run.sh            use an existing binary
#   PORT_BASE=18100 DATA=/tmp/tenants run.sh ports PORT_BASE..+3, data in DATA
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -z "${QUIVER:-}" ]; then
    (cd "$root" && cargo build --release -p quiver)
    target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    QUIVER="$target/release/quiver"
fi
command -v kcat >/dev/null || { echo "this example needs kcat (apt-get install kcat)" >&2; exit 1; }
base="${PORT_BASE:-18100}"
data="${DATA:-$here/data}"
ops="127.0.0.1:$base" admin="127.0.0.1:$((base + 1))" tenants="127.0.0.1:$((base + 2))"
quota=2000000 # bytes per second, acme's
rm -rf "$data" && mkdir -p "$data"

pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM
# Two listeners: PLAINTEXT on loopback for the operator's CLI (User:ANONYMOUS is a super
# user there, so keep it on loopback), SASL_PLAINTEXT for the tenants. The authorizer is
# on: a tenant sees and touches only its namespace.
"$QUIVER" serve --data-dir "$data/broker" --kafka-listen "$ops" --admin-listen "$admin" \
    --set cluster.listen="127.0.0.1:$((base + 3))" \
    --set kafka.listeners.tenants.listen="$tenants" \
    --set kafka.listeners.tenants.security_protocol=SASL_PLAINTEXT \
    --set security.authorizer=true --set security.super_users=User:ANONYMOUS \
    >"$data/broker.log" 2>&1 &
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
until_ok "$QUIVER" topic list --bootstrap "$ops"

echo "== two tenants, each with a namespace and a SCRAM user"
"$QUIVER" tenant create acme --prefix acme. --user acme-app:acme-secret --admin "$admin"
"$QUIVER" tenant create globex --prefix globex. --user globex-app:globex-secret --admin "$admin"
"$QUIVER" topic create acme.clicks --partitions 1 --bootstrap "$ops"
"$QUIVER" topic create globex.orders --partitions 1 --bootstrap "$ops"
echo "== acme may produce $quota bytes/s, all its clients together"
"$QUIVER" quota set --tenant acme --producer-byte-rate "$quota" --admin "$admin"

as_tenant() { # as_tenant USER PASSWORD kcat-args...
    local user=$1 password=$2
    shift 2
    kcat -b "$tenants" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-256 \
        -X sasl.username="$user" -X sasl.password="$password" "$@"
}

echo "== a tenant cannot see or touch the other's topics"
if as_tenant globex-app globex-secret -P -t acme.clicks -X message.timeout.ms=5000 <<<"sneaky" 2>"$data/refused.txt"; then
    echo "globex wrote to acme.clicks: the authorizer is not working" >&2
    exit 1
fi
grep -o "Broker: Topic authorization failed" "$data/refused.txt" | head -1

echo "== acme sends 20 MB as fast as it can; meanwhile globex sends 500 orders"
started=$(date +%s.%N)
# 20,000 lines of 999 bytes; kcat reports each throttle on stderr (kept in acme.log).
# Batches of 64 KiB let the throttles follow the quota closely; with librdkafka's
# default of 1 MB, several pipelined requests overshoot the one-second burst and are
# paid back by longer throttles, so the client averages below its quota.
(python3 -c 'import sys; sys.stdout.write(("x" * 999 + "\n") * 20000)' |
    as_tenant acme-app acme-secret -P -t acme.clicks -X linger.ms=5 -X batch.size=65536 2>"$data/acme.log" &&
    echo "$started $(date +%s.%N)" >"$data/acme.times") &
flood=$!
sleep 3 # let the flood reach its quota
g0=$(date +%s.%N)
seq 1 500 | sed 's/^/order-/' | as_tenant globex-app globex-secret -P -t globex.orders
g1=$(date +%s.%N)
python3 -c "print(f'globex: 500 orders delivered in {($g1 - $g0) * 1000:.0f} ms, beside the flood')"
"$QUIVER" quota list --admin "$admin"
wait "$flood"
read -r a0 a1 <"$data/acme.times"
python3 -c "print(f'acme: 20.0 MB delivered in {$a1 - $a0:.1f} s = {20e6 / ($a1 - $a0) / 1e6:.2f} MB/s (quota {$quota / 1e6:.2f} MB/s)')"
echo "acme's client was throttled $(grep -c 'throttled request' "$data/acme.log") times (throttle_time_ms in the responses)"
echo "== what each tenant stores"
"$QUIVER" tenant list --admin "$admin"
