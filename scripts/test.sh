#!/usr/bin/env bash
# Installs the dependencies, builds, and runs every test: unit (cmocka), integration (real
# processes on loopback), fuzz corpus regression, then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then a short libFuzzer run of each harness.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)

scripts/install-deps.sh

echo "== format (.clang-format, every tracked C/C++ file) =="
scripts/check-format.sh

echo "== build (release) =="
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
echo "== build (Release: -O3 finds warnings -O2 does not; compiled only, no tests) =="
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j "$JOBS"
echo "== tests (release) =="
(cd build && ctest --output-on-failure)

echo "== build (ASan + UBSan) =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$JOBS"
echo "== tests (ASan + UBSan) =="
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure)

if [ -d tests/fuzz ] && command -v clang >/dev/null; then
  echo "== libFuzzer (clang, short runs over the seed corpus) =="
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTG_FUZZ=ON \
    >/dev/null
  cmake --build build-fuzz -j "$JOBS"
  (cd build-fuzz && ctest -L fuzz --output-on-failure)
fi
echo "== all tests passed =="
