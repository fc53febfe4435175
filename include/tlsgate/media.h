#ifndef TLSGATE_MEDIA_H
#define TLSGATE_MEDIA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsgate/config.h"
#include "tlsgate/loop.h"
#include "tlsgate/mediaplan.h"
#include "tlsgate/metrics.h"
#include "tlsgate/srtp.h"
#include "tlsgate/timer.h"

// The media relay of one worker ([media] configured): a port allocator over the worker's own
// slice of `port_range`, and media sessions, one per call stream, each with four UDP sockets:
// RTP and RTCP toward the provider on `public_address`, RTP and RTCP toward the PBX on
// `internal_address`. Two kinds of the worker's loop:
//   - TG_KIND_MEDIA (a slab of sessions; op = the socket): an io_uring multishot recvmsg per
//     socket into the provided-buffer group TG_MEDIA_BGID, datagrams of up to
//     TG_MEDIA_BUF_SIZE;
//   - TG_KIND_MEDIA_TX (slot = the buffer id): the send of a relayed packet (a send with the
//     destination in the SQE where the kernel has it, kernel 6.0+; sendmsg elsewhere), made
//     from the very buffer it was received in (transformed in place); the buffer goes back to the
//     ring when the send completes. Sends are SQEs submitted with the loop's next submit: one
//     io_uring_enter per loop turn for every packet of that turn, no syscall per packet.
// Provider -> PBX: tg_srtp_unprotect (or tg_srtcp_unprotect) with the provider's key, then
// RTP to the PBX's address from its SDP. PBX -> provider: tg_srtp_protect with tlsgate's own
// key, toward the provider's address: the source of its first authenticated packet (symmetric
// RTP), its SDP address until then. Packets that fail authentication or the replay check are
// dropped and counted, never forwarded, and never move the latch. On the PBX side only packets
// from the PBX's SDP address are relayed (its port latched from them).
// A session without any packet for `timeout_s` ends: the owner's on_timeout callback is told,
// and closes it. Nothing here takes a lock; the worker owns all of it.

#define TG_MEDIA_BGID 2
#define TG_MEDIA_BUF_SIZE 2048u  // a datagram + the recvmsg header + room for the SRTP tag
#define TG_MEDIA_BUF_COUNT 4096u // per worker (8 MiB)

// ---------------------------------------------------------------------------------------------
// Sessions.

enum tg_msock { TG_MS_PROV_RTP = 0, TG_MS_PROV_RTCP, TG_MS_PBX_RTP, TG_MS_PBX_RTCP, TG_MS_NUM };

// tg_mpeer is where one side's packets go.
struct tg_mpeer {
    struct sockaddr_storage sdp; // RTP address as the side's SDP gave it
    struct sockaddr_storage rtp, rtcp;
    socklen_t len;
    uint8_t known;     // an address to send to (0: none yet, or on hold)
    uint8_t mux;       // RTCP on the RTP port (rtcp-mux)
    uint8_t latched;   // |rtp| learnt from received packets
    uint8_t recv;      // the side wants media (not sendonly, inactive or held)
    uint8_t described; // its SDP has been seen
};

struct tg_msess {
    int fd[TG_MS_NUM];
    uint16_t port[2]; // RTP ports: [0] provider side, [1] PBX side
    uint8_t armed[TG_MS_NUM];
    uint8_t rearm; // a receive ended for lack of buffers: in rearm_list until re-armed
    struct tg_mpeer prov, pbx;
    struct tg_srtp *rx;     // unprotects what the provider sends (its key)
    struct tg_srtp *rx_old; // its previous key, until a packet under the new one verifies
    struct tg_srtp *tx;     // protects what goes to the provider (tlsgate's key)
    // The media timeout: the timer is armed once per timeout_s, not moved per packet (which
    // relinks the lane and touches the neighbours' cache lines); a packet only notes the time,
    // and the expiry re-arms from the last packet while there was one.
    struct tg_timer timer;
    uint32_t active_ms; // loop time of the last relayed packet (or of arming)
    uint64_t owner;     // the caller's cookie (the dialog), given back by on_timeout
};

// tg_media_tx is one send in flight, from the receive buffer of the same index: its
// destination (and, where the kernel's send takes no address, its msghdr).
struct tg_media_tx {
    struct msghdr mh;
    struct iovec iov;
    struct sockaddr_storage to;
};

struct tg_media {
    struct tg_loop *loop;
    const struct tg_config *cfg;
    struct tg_media_counters *ctr;
    unsigned worker;
    struct tg_portalloc ports;
    struct tg_slab sess;             // of struct tg_msess
    struct tg_tlane lane;            // timeout_s
    struct tg_media_tx *tx;          // [TG_MEDIA_BUF_COUNT]
    struct msghdr rx_mh;             // the multishot recvmsg template (name only)
    uint8_t keep[TG_MEDIA_BUF_SIZE]; // a packet kept for the previous key while one rekeys
    uint32_t bufs_out;               // datagram buffers held (received, not yet given back)
    uint32_t *rearm_list;            // sessions whose receive stopped for lack of buffers
    uint32_t num_rearm;
    struct tg_guard *guard; // counts the sessions' descriptors (guard.h); NULL: none
    uint32_t max_calls;     // this worker's share of max_calls
    uint32_t num_calls;     // counted by the owner (tg_media_call_begin / _end)
    // The owner's callback when a session times out (it must close the session).
    void (*on_timeout)(void *arg, uint64_t owner);
    void *cb_arg;
};

// tg_media_init sets up worker |worker|'s media state (of |num_workers|): its port slice, the
// session slab, the buffer group and the two kinds on |loop|. Returns 0 with a reason in |err|.
int tg_media_init(struct tg_media *m, struct tg_loop *loop, const struct tg_config *cfg,
                  struct tg_media_counters *ctr, unsigned worker, unsigned num_workers, char *err,
                  size_t err_len);

// tg_media_cleanup closes every session and frees what |m| holds.
void tg_media_cleanup(struct tg_media *m);

// tg_media_call_begin takes one of the worker's call slots (0 when max_calls is reached:
// counted as port_exhausted); tg_media_call_end gives it back.
int tg_media_call_begin(struct tg_media *m);
void tg_media_call_end(struct tg_media *m);

// tg_media_open opens a session (two port pairs, four sockets, receives armed) for |owner|.
// Returns its slot (generation in |*gen|), or TG_NIL when ports, sockets or slots ran out.
uint32_t tg_media_open(struct tg_media *m, uint64_t owner, uint32_t *gen);

// tg_media_get returns the live session |slot| of generation |gen|, or NULL.
struct tg_msess *tg_media_get(struct tg_media *m, uint32_t slot, uint32_t gen);

// tg_media_close ends session |slot|: receives cancelled, sockets closed, ports freed, keys
// wiped.
void tg_media_close(struct tg_media *m, uint32_t slot);

// tg_media_set_peer sets where side |pbx| (0: the provider) is reached: RTP at |rtp| (NULL:
// no address, held with c=0.0.0.0), RTCP at |rtcp_port| (0: RTP port + 1), |mux| for
// rtcp-mux; |receives| 0 when it wants no media (sendonly, inactive: its own packets are still
// relayed). A provider address latched from its packets is kept when the SDP address does not
// change. Once both sides are described, a stream on hold (either side not receiving) is
// exempt from the media timeout until it resumes.
void tg_media_set_peer(struct tg_media *m, struct tg_msess *s, int pbx, const struct sockaddr *rtp,
                       uint16_t rtcp_port, int mux, int receives);

// tg_media_set_rx_key installs the provider's key (the previous one stays as a fallback until
// a packet under the new one verifies); tg_media_set_tx_key tlsgate's key toward the
// provider. Return 0 when the context cannot be made (memory, unusable parameters).
int tg_media_set_rx_key(struct tg_msess *s, const struct tg_srtp_params *p);
int tg_media_set_tx_key(struct tg_msess *s, const struct tg_srtp_params *p);

// tg_media_tick re-arms receives that ran out of buffers and ends sessions that timed out.
void tg_media_tick(struct tg_media *m);

#endif // TLSGATE_MEDIA_H
