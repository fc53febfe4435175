#!/usr/bin/env python3
"""The media demo (scripts/demo.sh runs it after the byte-tunnel demo): a SIP call over mutual
TLS with SRTP audio through tlsgate ([media]) to the PBX stand-in and back.

The provider is played by Python (SIP over mutual TLS) with tg-srtp-peer (libsrtp2) as its
media end; the PBX by a Python SIP UAS on TCP whose media end echoes every RTP packet. It shows
the SDP each side sees, the audio coming back byte for byte, a packet under a wrong key dropped,
the media metrics, and the ports freed by BYE. Everything on 127.0.0.1; it uses the test
harness (a throwaway PKI, tlsgate started and stopped for the demo).

    cmake --build build && python3 scripts/demo_media.py"""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import test_media as tm  # noqa: E402
from sipmsg import Stream  # noqa: E402


def say(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(label, body):
    for line in body.decode().splitlines():
        if re.match(r"[cm]=|a=crypto", line):
            print(f"  {label}: {line}")


def main():
    pbx = tm.Pbx()
    base = 40000
    try:
        with h.Proxy(tm.media_config(pbx, base)) as px:
            say(f"tlsgate with [media]: public and internal address 127.0.0.1, ports {base}-"
                f"{base + 199}; PBX stand-in {pbx.addr}, its RTP echo on {pbx.rtp_port}")
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port, key = tm.udp_pair(), tm.b64key()
            offer = tm.provider_sdp(p_port, [(1, tm.SUITE80, key)])
            say("the provider calls over mutual TLS, offering SRTP")
            show("provider offers ", offer)
            ok, _ = tm.MediaCallTest.invite(None, st, "demo-1", 1, "dinv", offer)
            (pinv,) = pbx.wait("INVITE")
            show("the PBX sees    ", pinv.body)
            show("provider gets   ", ok.body)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            route = ok.all("Record-Route")
            st.send(tm.request("ACK", "demo-1", 1, "dack", to_tag=to_tag, route=route))
            q_port, _ = tm.media_port(ok.body)
            (_, _, ours), = tm.crypto_lines(ok.body)
            say("50 packets of SRTP audio (and 2 SRTCP reports), 5 under a wrong key")
            r = tm.run_peer(p_port, q_port, key, ours.decode(), count=50, wrong=tm.b64key(),
                            wrong_count=5)
            print(f"  sent {r['sent']}, came back byte-exact {r['matched']}, wrong-key echoed "
                  f"{r['wrong_echoed']}, SRTCP back {r['rtcp_received']}/{r['rtcp_sent']}")
            say("media metrics")
            for line in px.http("/metrics")[1].splitlines():
                if line.startswith("tlsgate_media_") and not line.endswith(" 0"):
                    print("  " + line)
            say("BYE frees the ports")
            st.send(tm.request("BYE", "demo-1", 2, "dbye", to_tag=to_tag, route=route))
            tm.read_final(st)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            h.wait_for(lambda: tm.can_bind(q_port), 5, "the port free")
            print(f"  calls active: {int(px.metric('tlsgate_media_calls_active'))}; port "
                  f"{q_port} can be bound again")
            st.sock.close()
    finally:
        pbx.close()


if __name__ == "__main__":
    main()
