// The step decision of a connection: state and flags in, the next action out. Pure; conn.c
// carries the actions out (see include/tlsgate/conn.h).
#include "tlsgate/conn.h"

enum tg_conn_action tg_conn_decide(const struct tg_conn_view *v) {
    const uint32_t f = v->flags;
    // Half-close from the plain side: our close_notify once everything before it is sealed.
    if (v->state == TG_CS_OPEN && (f & TG_F_PLAIN_RD_EOF) && v->pend_plain == 0 &&
        !v->sip_wait_pbx && !(f & TG_F_TLS_SHUT_SENT))
        return TG_ACT_TLS_SHUTDOWN;
    if ((f & TG_F_TLS_UP) && v->to_tls > 0 && !(f & TG_F_TLS_SENDING))
        return TG_ACT_SEND_TLS;
    if ((f & TG_F_PLAIN_UP) && v->to_plain > 0 && !(f & (TG_F_PLAIN_SENDING | TG_F_PLAIN_WR_DONE)))
        return TG_ACT_SEND_PLAIN;
    if ((f & TG_F_TLS_SHUT_SENT) && !(f & TG_F_TLS_SENDING) && v->to_tls == 0 &&
        !(f & TG_F_TLS_WR_DONE))
        return (f & TG_F_FATAL_FLUSH) ? TG_ACT_CLOSE_FLUSHED : TG_ACT_TLS_WR_SHUT;
    // Half-close from the TLS side: FIN to the plain side once its queue is empty.
    if ((f & TG_F_TLS_RD_EOF) && (f & TG_F_PLAIN_UP) && !(f & TG_F_PLAIN_SENDING) &&
        v->to_plain == 0 && v->pend_tls == 0 && !v->sip_wait_prov && !(f & TG_F_PLAIN_WR_DONE))
        return TG_ACT_PLAIN_WR_SHUT;
    const uint32_t done =
        TG_F_TLS_RD_EOF | TG_F_PLAIN_RD_EOF | TG_F_TLS_WR_DONE | TG_F_PLAIN_WR_DONE;
    if ((f & done) == done)
        return TG_ACT_CLOSE_FINISHED;

    // Receives: armed exactly when the data they bring can be taken.
    // Not while the provided buffers are exhausted (TG_F_NOBUFS): the tick re-arms.
    int want_tls = (f & TG_F_TLS_UP) && (v->state == TG_CS_HANDSHAKE || v->state == TG_CS_OPEN) &&
                   !(f & (TG_F_TLS_RD_EOF | TG_F_TCP_EOF | TG_F_FATAL_FLUSH | TG_F_NOBUFS)) &&
                   v->pend_tls == 0 && v->to_plain < v->cap;
    int want_plain = (f & TG_F_PLAIN_UP) && v->state == TG_CS_OPEN &&
                     !(f & (TG_F_PLAIN_RD_EOF | TG_F_TLS_SHUT_SENT | TG_F_NOBUFS)) &&
                     v->pend_plain == 0 && v->to_tls < v->cap;
    if (want_tls && !(f & TG_F_TLS_RECV))
        return TG_ACT_ARM_TLS_RECV;
    if (!want_tls && (f & TG_F_TLS_RECV) && !(f & TG_F_TLS_RECV_CANCEL))
        return TG_ACT_CANCEL_TLS_RECV;
    if (want_plain && !(f & TG_F_PLAIN_RECV))
        return TG_ACT_ARM_PLAIN_RECV;
    if (!want_plain && (f & TG_F_PLAIN_RECV) && !(f & TG_F_PLAIN_RECV_CANCEL))
        return TG_ACT_CANCEL_PLAIN_RECV;
    return TG_ACT_NONE;
}

const char *tg_conn_action_name(enum tg_conn_action a) {
    static const char *const names[] = {
        "none",          "tls_shutdown",    "send_tls",       "send_plain",
        "close_flushed", "tls_wr_shut",     "plain_wr_shut",  "close_finished",
        "arm_tls_recv",  "cancel_tls_recv", "arm_plain_recv", "cancel_plain_recv",
    };
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}
