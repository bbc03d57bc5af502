#!/bin/sh
# Builds config_bench in a Release (-O2) build of its own and records its
# results in docs/BENCHMARKS.md, replacing the previous ones.
#   bench/run-config-bench.sh
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DTUNNELS_TESTS=OFF
cmake --build build-bench -j2 --target config_bench
./build-bench/bench/config_bench --write docs/BENCHMARKS.md --command bench/run-config-bench.sh
