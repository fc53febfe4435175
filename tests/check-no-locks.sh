#!/usr/bin/env bash
# The data path takes no lock of ours: no mutex, read-write lock, spin lock, semaphore wait or
# condition variable in the modules a worker runs (docs/ARCHITECTURE.md, "Threads"). Exits 1
# and names the line when one appears.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=(loop timer bufq tlsconn verify peers connstep conn upstream sipglue sipconn sip siprw
           prober probes worker metrics log srtp signer resolver dnsmsg sdp media mediaplan
           mediasig calldir)
files=()
for m in "${DATA_PATH[@]}"; do
  for f in "proxy/$m.c" "include/tlsgate/$m.h"; do
    [ -f "$f" ] && files+=("$f")
  done
done
# A line that runs off the data path (thread start-up) says so with `// off the data path`.
pattern='pthread_(mutex|rwlock|spin|cond)_|sem_(wait|timedwait|trywait)|\bflock\(|mtx_lock|lockf\('
if grep -nE "$pattern" "${files[@]}" | grep -v '// off the data path'; then
  echo "check-no-locks: a lock on the data path (above)" >&2
  exit 1
fi
echo "check-no-locks: ${#files[@]} data-path files, no lock"
