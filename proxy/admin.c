#include "tlsgate/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "tlsgate/control.h"
#include "tlsgate/log.h"
#include "tlsgate/peers.h"
#include "tlsgate/version.h"

struct tg_admin {
    struct MHD_Daemon *daemon;
    const struct tg_admin_info *info;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text) {
    char *body = strdup(text);
    if (body == NULL)
        return MHD_NO;
    return reply(conn, status, "text/plain; charset=utf-8", body, strlen(body));
}

static char *status_json(const struct tg_admin_info *info, size_t *out_len) {
    const struct tg_metrics *m = info->metrics;
    size_t cap = 16384 + m->num_listeners * 256;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t len = 0;
    long long now = (long long)time(NULL);
    len += (size_t)snprintf(out + len, cap - len,
                            "{\"version\":\"%s\",\"uptime_s\":%lld,\"workers\":%u,"
                            "\"draining\":%s,\"listeners\":[",
                            TLSGATE_VERSION, now - info->started, info->num_workers,
                            atomic_load(info->draining) ? "true" : "false");
    for (size_t l = 0; l < m->num_listeners && len < cap; l++) {
        uint64_t opened = 0, closed = 0;
        for (size_t w = 0; w < m->num_workers; w++) {
            opened += tg_counter_get(&m->per_worker[w][l].conns_opened);
            closed += tg_counter_get(&m->per_worker[w][l].conns_closed);
        }
        const struct tg_listener_conf *lc = &info->cfg->listeners[l];
        char listen[80];
        tg_target_format(&lc->listen, listen, sizeof(listen));
        len += (size_t)snprintf(out + len, cap - len,
                                "%s{\"name\":\"%s\",\"kind\":\"%s\",\"listen\":\"%s\","
                                "\"mode\":\"%s\",\"active\":%llu,\"total\":%llu}",
                                l ? "," : "", lc->name, m->listener_kinds[l], listen,
                                lc->mode == TG_MODE_SIP ? "sip" : "tcp",
                                (unsigned long long)(opened - closed), (unsigned long long)opened);
    }
    if (len < cap)
        len += (size_t)snprintf(out + len, cap - len, "]");
    if (info->control != NULL && len + 2 < cap) {
        out[len++] = ',';
        len += tg_control_status_json(info->control, out + len, cap - len);
    }
    if (info->peers != NULL && len + 20 < cap) {
        len += (size_t)snprintf(out + len, cap - len, ",\"recent_peers\":");
        if (len < cap)
            len += tg_peers_json(info->peers, out + len, cap - len);
    }
    if (len < cap)
        len += (size_t)snprintf(out + len, cap - len, "}\n");
    if (len >= cap)
        len = cap - 1;
    *out_len = len;
    return out;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    struct tg_admin *a = cls;
    static int seen;
    if (strcmp(method, "POST") == 0 && *con_cls == NULL) {
        *con_cls = &seen; // first call: headers only; act once the (ignored) body is in
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; // bodies are not used by any endpoint
        return MHD_YES;
    }
    if (strcmp(url, "/reload") == 0) {
        if (strcmp(method, "POST") != 0)
            return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST\n");
        if (a->info->control == NULL)
            return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "reload unavailable\n");
        char *body = malloc(2048);
        if (body == NULL)
            return MHD_NO;
        int ok = tg_control_reload(a->info->control, "admin", body, 2048);
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_UNPROCESSABLE_CONTENT, "application/json",
                     body, strlen(body));
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/healthz") == 0) {
        if (atomic_load(a->info->draining))
            return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n");
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    }
    if (strcmp(url, "/metrics") == 0) {
        char extra[2048];
        int n = snprintf(extra, sizeof(extra),
                         "# HELP tlsgate_workers Worker threads.\n# TYPE tlsgate_workers gauge\n"
                         "tlsgate_workers %u\n",
                         a->info->num_workers);
        if (a->info->control != NULL && n > 0 && (size_t)n < sizeof(extra))
            tg_control_metrics(a->info->control, extra + n, sizeof(extra) - (size_t)n);
        char *body;
        size_t len;
        if (!tg_metrics_render(a->info->metrics, extra, &body, &len))
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", body, len);
    }
    if (strcmp(url, "/status") == 0) {
        size_t len;
        char *body = status_json(a->info, &len);
        if (body == NULL)
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "application/json", body, len);
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

struct tg_admin *tg_admin_start(const struct tg_admin_info *info, char *err, size_t err_len) {
    struct tg_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    a->info = info;
    const struct tg_target *t = &info->cfg->admin_listen;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    if (t->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->daemon =
        MHD_start_daemon(flags, t->port, NULL, NULL, handle, a, MHD_OPTION_SOCK_ADDR,
                         (const struct sockaddr *)&t->addr, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (a->daemon == NULL) {
        char where[80];
        tg_target_format(t, where, sizeof(where));
        snprintf(err, err_len, "admin listen %s: cannot start HTTP server (address in use?)",
                 where);
        free(a);
        return NULL;
    }
    return a;
}

void tg_admin_stop(struct tg_admin *a) {
    if (a == NULL)
        return;
    MHD_stop_daemon(a->daemon);
    free(a);
}
