#!/usr/bin/env bash
# Builds every WASM plugin component: the built-in plugins, the starter example and
# the hostile test plugins, for wasm32-wasip2 in release, and prints the .wasm paths;
# then murmur2 and the built-in transforms as native libraries (C ABI) and prints their
# paths.
# Output: ${CARGO_TARGET_DIR:-<workspace>/target}/wasm32-wasip2/release/*.wasm
#         ${CARGO_TARGET_DIR:-<workspace>/target}/native-plugins/libquiver_plugin_*.so
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

packages=(
    quiver-plugin-murmur2
    quiver-plugin-vip
    quiver-plugin-hash
    quiver-plugin-field-route
    quiver-plugin-json-redact
    quiver-plugin-filter
    quiver-plugin-split
    quiver-plugin-repartition
    quiver-plugin-mirror
    quiver-plugin-tiers
    quiver-plugin-fair-share
    custom-partitioner
    quiver-test-plugin-infinite-loop
    quiver-test-plugin-memory-bomb
    quiver-test-plugin-panic
    quiver-test-plugin-out-of-range
    quiver-test-plugin-huge-output
    quiver-test-plugin-bad-import
    quiver-test-plugin-wrong-kind
    quiver-test-plugin-bad-config
    quiver-test-plugin-transform-hostile
    quiver-test-plugin-quota-trap
)

args=()
for package in "${packages[@]}"; do
    args+=(-p "$package")
done
# One invocation, so wit-bindgen and the SDK compile once for all of them.
cargo build --release --target wasm32-wasip2 "${args[@]}" >&2

out="${CARGO_TARGET_DIR:-$root/target}/wasm32-wasip2/release"
for package in "${packages[@]}"; do
    wasm="$out/${package//-/_}.wasm"
    if [[ ! -f "$wasm" ]]; then
        echo "build.sh: expected $wasm was not produced" >&2
        exit 1
    fi
    echo "$wasm"
done

# The native builds (C ABI) of murmur2 and the built-in transforms, for the native
# plugin path (plugins.native.*). A plain `cargo build --release` of the workspace
# rebuilds release/libquiver_plugin_*.so without the `native` feature (no C ABI
# symbols), so the native libraries are copied to native-plugins/, which no other
# build writes, and those copies' paths are printed.
native=(
    quiver-plugin-murmur2
    quiver-plugin-repartition
    quiver-plugin-json-redact
    quiver-plugin-filter
    quiver-plugin-split
)
args=()
features=()
for package in "${native[@]}"; do
    args+=(-p "$package")
    features+=("$package/native")
done
cargo build --release "${args[@]}" --features "$(IFS=,; echo "${features[*]}")" >&2
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target/native-plugins"
for package in "${native[@]}"; do
    lib="lib${package//-/_}.so"
    built="$target/release/$lib"
    if [[ ! -f "$built" ]]; then
        echo "build.sh: expected $built was not produced" >&2
        exit 1
    fi
    cp "$built" "$target/native-plugins/$lib.tmp"
    mv "$target/native-plugins/$lib.tmp" "$target/native-plugins/$lib"
    echo "$target/native-plugins/$lib"
done
