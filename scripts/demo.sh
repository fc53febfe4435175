#!/usr/bin/env bash
# Installs, builds and runs tlsgate on the demo configuration (conf/demo.conf): makes a
# throwaway PKI on first run, starts an echo server as the "PBX", sends real traffic through
# both directions with two TLS stacks, shows the metrics, then keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/demo-run
PKI=$RUN/pki

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target tlsgate tg-client tg-echo tg-srtp-peer
mkdir -p "$RUN"
scripts/make-pki.sh "$PKI" sbc.tlsgate.test

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "checking the configuration and our certificate"
build/tlsgate check -c conf/demo.conf

say "starting the PBX stand-in (echo) on 127.0.0.1:15060 and tlsgate"
build/tests/tools/tg-echo --listen 127.0.0.1:15060 >/dev/null &
pids+=($!)
build/tlsgate run -c conf/demo.conf 2> >(sed -u 's/^/  [tlsgate] /' >&2) &
TG=$!
pids+=($TG)
for _ in $(seq 50); do
  curl -fs http://127.0.0.1:19900/healthz >/dev/null 2>&1 && break
  sleep 0.1
done

say "provider -> inbound: BoringSSL client with the provider's certificate, 16 MiB each way"
build/tests/tools/tg-client --connect 127.0.0.1:15061 --cert "$PKI/client.pem" \
  --key "$PKI/client.key" --ca "$PKI/ca.pem" --sni sbc.tlsgate.test --bulk 16777216

say "provider -> inbound: openssl s_client (a second TLS stack), one SIP-like line"
printf 'OPTIONS sip:sbc.tlsgate.test SIP/2.0\r\n' |
  timeout 5 openssl s_client -connect 127.0.0.1:15061 -cert "$PKI/client.pem" \
    -key "$PKI/client.key" -CAfile "$PKI/ca.pem" -verify_return_error -quiet -ign_eof \
    2>/dev/null | head -c 200 || true

say "a self-signed provider certificate is refused"
build/tests/tools/tg-client --connect 127.0.0.1:15061 --cert "$PKI/selfsigned.pem" \
  --key "$PKI/selfsigned.key" --ca "$PKI/ca.pem" --expect-refused || true

say "PBX -> outbound (plain TCP) -> mutual TLS -> inbound -> PBX echo, and back"
python3 - <<'PY'
import socket
s = socket.create_connection(("127.0.0.1", 15062), timeout=5)
msg = b"INVITE sip:+15551234@sip.um.example.net SIP/2.0\r\n"
s.sendall(msg)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    got += d
print("  sent    :", msg)
print("  received:", got, "(byte-exact)" if got == msg else "(MISMATCH)")
PY

say "metrics (http://127.0.0.1:19900/metrics)"
curl -fs http://127.0.0.1:19900/metrics | grep -v '^#' | grep -v ' 0$'

say "a SIP call with SRTP audio through [media] (a second tlsgate, scripts/demo_media.py)"
python3 scripts/demo_media.py

say "tlsgate keeps running: try it yourself, Ctrl-C to stop"
echo "  build/tests/tools/tg-client --connect 127.0.0.1:15061 --cert $PKI/client.pem --key $PKI/client.key --ca $PKI/ca.pem"
echo "  curl http://127.0.0.1:19900/status"
wait "$TG"
