#ifndef TLSGATE_SIPGLUE_H
#define TLSGATE_SIPGLUE_H

#include <stdint.h>

#include "tlsgate/conn.h"
#include "tlsgate/sipconn.h"

// The SIP relay of mode = sip on a connection: instead of relaying bytes, each side's
// plaintext is framed into messages in the connection's tg_sipconn, and what
// tg_sipconn_process makes of them is queued here: toward the PBX by appending to |to_plain|,
// toward the provider by SSL_write into the ciphertext queue. A message is processed only when
// its destination queue has no send in flight and is under its bound, so the append may grow
// the queue and SSL_write never has to be retried; otherwise processing stops (input then backs
// up into pend_tls / pend_plain and the receive is cancelled, as in tcp mode), and the step
// resumes it once the send has completed. Also our CRLFCRLF keepalive toward the provider.

// tg_sipglue_init allocates the per-slot SIP state of a worker that has a SIP listener.
int tg_sipglue_init(struct tg_conns *cs);
void tg_sipglue_cleanup(struct tg_conns *cs);

// tg_sipglue_attach gives a new connection of a SIP listener, accepted as |fd|, its state.
// Returns 0 when memory is short.
int tg_sipglue_attach(struct tg_conns *cs, struct tg_conn *c, int fd);

// tg_sipglue_detach frees the SIP state of a connection being freed.
void tg_sipglue_detach(struct tg_conns *cs, struct tg_conn *c);

// tg_sipglue_verified hands the verified provider name to the SIP state (X-TLS-Peer-Name).
void tg_sipglue_verified(struct tg_conns *cs, struct tg_conn *c);

// tg_sipglue_backend_up notes our address toward the PBX once the backend connection is up.
void tg_sipglue_backend_up(struct tg_conns *cs, struct tg_conn *c);

// tg_sipglue_provider_seen notes traffic from the provider (keepalive bookkeeping).
void tg_sipglue_provider_seen(struct tg_conns *cs, struct tg_conn *c);

// tg_sipglue_tls_read decrypts into the provider side's input buffer and processes it.
void tg_sipglue_tls_read(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc);

// tg_sipglue_plain_feed takes plaintext from the PBX and processes it; returns how many bytes
// it took (all of them when the connection is going away: they are dropped).
uint32_t tg_sipglue_plain_feed(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc,
                               const uint8_t *data, uint32_t len);

// tg_sipglue_resume processes what both sides have buffered, once a send has made room.
// Returns 0 when the connection is closing.
int tg_sipglue_resume(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc);

// tg_sipglue_drop_pending forgets the input a closing SIP stream will never process.
void tg_sipglue_drop_pending(struct tg_conns *cs, struct tg_conn *c);

// tg_sipglue_send_own sends tlsgate's own request |r| (a tg_mediasig_send_fn; |arg| is the
// worker's tg_conns) toward |toward| on the connection pair |slot|/|gen|, then steps the pair:
// never from inside that pair's processing (the media tick calls it). Returns 1 when it went
// out, 0 when the queue toward |toward| is busy, -1 when the pair is gone or closing, or that
// side is finished.
int tg_sipglue_send_own(void *arg, uint32_t slot, uint32_t gen, enum tg_sip_side toward,
                        const struct tg_sip_own_req *r);

// tg_sipglue_keepalive_tick sends our ping on provider sides idle for keepalive_interval_ms.
void tg_sipglue_keepalive_tick(struct tg_conns *cs);

// tg_sipglue_fqdn_port is the port the provider reaches us on for listener |lc|.
uint16_t tg_sipglue_fqdn_port(const struct tg_config *cfg, const struct tg_listener_conf *lc);

#endif // TLSGATE_SIPGLUE_H
