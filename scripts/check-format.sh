#!/usr/bin/env bash
# Checks every tracked C/C++ source against .clang-format without changing anything: prints
# clang-format's complaints and the files that differ, and exits 1 when any file does.
#   scripts/check-format.sh                 every file git tracks (*.c, *.h, *.cc)
#   scripts/check-format.sh FILE...         just these
# CLANG_FORMAT picks the binary (default clang-format; .clang-format was tuned with 14).
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
if ! command -v "$CLANG_FORMAT" >/dev/null; then
  echo "check-format: $CLANG_FORMAT not found (apt-get install clang-format)" >&2
  exit 2
fi
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.c' '*.h' '*.cc')
fi
failed=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue # deleted in the working tree, not yet in the index
  if ! "$CLANG_FORMAT" --dry-run --Werror "$f"; then
    failed+=("$f")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "check-format: ${#failed[@]} of ${#files[@]} files differ from .clang-format:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  echo "fix with: $CLANG_FORMAT -i FILE" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files clean"
