#include "tlsgate/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/mem.h>

#include "tlsgate/adminpolicy.h"
#include "tlsgate/control.h"
#include "tlsgate/log.h"
#include "tlsgate/peers.h"
#include "tlsgate/resolver.h"
#include "tlsgate/version.h"

// Bounds on the HTTP server, so that slow or many clients cannot take it over (a client that
// sends a header line every few seconds holds a connection as long as it likes otherwise):
// each connection is closed after TG_ADMIN_IDLE_TIMEOUT_S without a byte, one source address
// holds at most TG_ADMIN_PER_IP_LIMIT connections and everyone together TG_ADMIN_CONN_LIMIT;
// TG_ADMIN_THREADS threads (each its own epoll) serve them, so a slow handler (a reload reads
// files and checks certificates) leaves the others answering /healthz.
#define TG_ADMIN_THREADS 4
#define TG_ADMIN_CONN_LIMIT 64
#define TG_ADMIN_PER_IP_LIMIT 8
#define TG_ADMIN_IDLE_TIMEOUT_S 3
#define TG_ADMIN_MEMORY_LIMIT (16 * 1024)

struct tg_admin {
    struct MHD_Daemon *daemon;
    const struct tg_admin_info *info;
    struct tg_adminpolicy policy;
    _Atomic uint64_t refused[TG_ADMIN_REFUSE_NUM]; // by reason; several threads add
};

// k_body_pending marks a POST /reload whose body is still being read (and thrown away).
static char k_body_pending;

// reply queues |body| (|len| bytes, malloc'd, owned from here on) with |status|, plus the
// header |extra_name|: |extra_value| when |extra_name| is not NULL. |close_after| asks MHD to close
// the connection after the response.
static enum MHD_Result reply_full(struct MHD_Connection *conn, unsigned status, const char *type,
                                  char *body, size_t len, const char *extra_name,
                                  const char *extra_value, int close_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (extra_name != NULL)
        MHD_add_response_header(r, extra_name, extra_value);
    if (close_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len) {
    return reply_full(conn, status, type, body, len, NULL, NULL, 0);
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

// ---------------------------------------------------------------------------------------------
// Endpoints, once the policy has let a request through.

// metrics_extra writes the admin's own and the control's Prometheus lines into |buf|.
static void metrics_extra(struct tg_admin *a, char *buf, size_t len) {
    size_t n = 0;
    int w = snprintf(buf, len,
                     "# HELP tlsgate_workers Worker threads.\n# TYPE tlsgate_workers gauge\n"
                     "tlsgate_workers %u\n"
                     "# HELP tlsgate_admin_refused_total Admin HTTP requests refused, by reason.\n"
                     "# TYPE tlsgate_admin_refused_total counter\n",
                     a->info->num_workers);
    if (w < 0 || (size_t)w >= len)
        return;
    n = (size_t)w;
    for (int r = TG_ADMIN_OK + 1; r < TG_ADMIN_REFUSE_NUM; r++) {
        w = snprintf(
            buf + n, len - n, "tlsgate_admin_refused_total{reason=\"%s\"} %llu\n",
            tg_admin_refusal_name((enum tg_admin_refusal)r),
            (unsigned long long)atomic_load_explicit(&a->refused[r], memory_order_relaxed));
        if (w < 0 || (size_t)w >= len - n)
            return;
        n += (size_t)w;
    }
    if (a->info->control != NULL)
        n += tg_control_metrics(a->info->control, buf + n, len - n);
    if (a->info->resolver != NULL && n < len)
        tg_resolver_metrics(a->info->resolver, buf + n, len - n);
}

static enum MHD_Result serve(struct tg_admin *a, struct MHD_Connection *conn,
                             enum tg_admin_route route) {
    switch (route) {
    case TG_ADMIN_ROUTE_HEALTHZ:
        if (atomic_load(a->info->draining))
            return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "draining\n");
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    case TG_ADMIN_ROUTE_METRICS: {
        char extra[16384];
        metrics_extra(a, extra, sizeof(extra));
        char *body;
        size_t len;
        if (!tg_metrics_render(a->info->metrics, extra, &body, &len))
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", body, len);
    }
    case TG_ADMIN_ROUTE_STATUS: {
        size_t len;
        char *body = status_json(a->info, &len);
        if (body == NULL)
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "application/json", body, len);
    }
    case TG_ADMIN_ROUTE_RELOAD: {
        if (a->info->control == NULL)
            return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "reload unavailable\n");
        char *body = malloc(2048);
        if (body == NULL)
            return MHD_NO;
        int ok = tg_control_reload(a->info->control, "admin", body, 2048);
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_UNPROCESSABLE_CONTENT, "application/json",
                     body, strlen(body));
    }
    case TG_ADMIN_ROUTE_NONE:
        break;
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

// ---------------------------------------------------------------------------------------------
// Refusals.

// log_safe copies at most 64 bytes of |s| for a log line, every byte outside a conservative
// URL set replaced with '?' (no blank, quote or backslash can reach the line).
static void log_safe(char *out, size_t out_len, const char *s) {
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n + 1 < out_len && n < 64; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 strchr("/._-~%:+=&@,;!*()[]$'", c) != NULL;
        out[n++] = ok ? c : '?';
    }
    if (out_len > 0)
        out[n] = '\0';
}

static void count_refusal(struct tg_admin *a, enum tg_admin_refusal r) {
    atomic_fetch_add_explicit(&a->refused[r], 1, memory_order_relaxed);
}

// refuse answers a refused request with its status, counts it and logs it. The connection is
// closed after the answer.
static enum MHD_Result refuse(struct tg_admin *a, struct MHD_Connection *conn, const char *method,
                              const char *url, const struct sockaddr *source,
                              const struct tg_admin_decision *d) {
    count_refusal(a, d->refusal);
    char peer[INET6_ADDRSTRLEN], meth[72], path[72];
    tg_sockaddr_format(source, peer, sizeof(peer));
    log_safe(meth, sizeof(meth), method);
    log_safe(path, sizeof(path), url);
    int quiet = d->refusal == TG_ADMIN_REFUSE_NOT_FOUND || d->refusal == TG_ADMIN_REFUSE_METHOD;
    tg_log(quiet ? TG_LOG_INFO : TG_LOG_WARN, "admin_refused",
           "reason=%s status=%u peer=%s method=%s path=%s", tg_admin_refusal_name(d->refusal),
           (unsigned)d->status, peer, meth, path);

    const char *text = "forbidden\n", *hname = NULL, *hvalue = NULL;
    switch (d->refusal) {
    case TG_ADMIN_REFUSE_HOST:
        text = "misdirected request: unknown Host\n";
        break;
    case TG_ADMIN_REFUSE_NOT_FOUND:
        text = "not found\n";
        break;
    case TG_ADMIN_REFUSE_METHOD:
        text = "method not allowed\n";
        hname = MHD_HTTP_HEADER_ALLOW;
        hvalue = d->route == TG_ADMIN_ROUTE_RELOAD ? "POST" : "GET, HEAD";
        break;
    case TG_ADMIN_REFUSE_ORIGIN:
        text = "forbidden: cross-origin request\n";
        break;
    case TG_ADMIN_REFUSE_CONTENT_TYPE:
        text = "forbidden: this Content-Type may come from a cross-site form\n";
        break;
    case TG_ADMIN_REFUSE_TOKEN_MISSING:
        text = "unauthorized: Authorization: Bearer TOKEN required\n";
        hname = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        hvalue = "Bearer realm=\"tlsgate\"";
        break;
    case TG_ADMIN_REFUSE_TOKEN_WRONG:
        text = "unauthorized: wrong token\n";
        hname = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        hvalue = "Bearer realm=\"tlsgate\", error=\"invalid_token\"";
        break;
    case TG_ADMIN_REFUSE_SOURCE:
    case TG_ADMIN_OK:
    case TG_ADMIN_REFUSE_NUM:
        break;
    }
    char *body = strdup(text);
    if (body == NULL)
        return MHD_NO;
    return reply_full(conn, d->status, "text/plain; charset=utf-8", body, strlen(body), hname,
                      hvalue, 1);
}

// accept_policy drops a connection from a source outside `allow` before anything is read.
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addr_len) {
    struct tg_admin *a = cls;
    (void)addr_len;
    if (tg_adminpolicy_source_ok(&a->policy, addr))
        return MHD_YES;
    count_refusal(a, TG_ADMIN_REFUSE_SOURCE);
    char peer[INET6_ADDRSTRLEN];
    tg_sockaddr_format(addr, peer, sizeof(peer));
    TG_WARN("admin_refused", "reason=source peer=%s action=closed", peer);
    return MHD_NO;
}

// ---------------------------------------------------------------------------------------------
// Requests.

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    struct tg_admin *a = cls;
    if (*con_cls == &k_body_pending) {
        if (*upload_data_size != 0) {
            *upload_data_size = 0; // no endpoint takes a body
            return MHD_YES;
        }
        return serve(a, conn, TG_ADMIN_ROUTE_RELOAD);
    }
    // First call, with the headers only: decide before any body is read.
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct sockaddr_storage local;
    socklen_t local_len = sizeof(local);
    const struct sockaddr *local_sa = NULL;
    if (a->policy.listen_wildcard) {
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (fi != NULL && getsockname(fi->connect_fd, (struct sockaddr *)&local, &local_len) == 0)
            local_sa = (const struct sockaddr *)&local;
    }
    struct tg_admin_request req = {
        .method = method,
        .path = url,
        .host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST),
        .origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN),
        .content_type =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .source = ci != NULL ? ci->client_addr : NULL,
        .local = local_sa,
    };
    struct tg_admin_decision d;
    if (tg_adminpolicy_decide(&a->policy, &d, &req) != TG_ADMIN_OK)
        return refuse(a, conn, method, url, req.source, &d);
    if (d.route != TG_ADMIN_ROUTE_RELOAD)
        return serve(a, conn, d.route);
    *con_cls = &k_body_pending; // act once the (ignored) body is in
    return MHD_YES;
}

// ---------------------------------------------------------------------------------------------
// The token file.

// token_fail writes `FILE:LINE: admin.token_file: ` and the formatted text into |err|.
static int token_fail(const struct tg_config *cfg, char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int token_fail(const struct tg_config *cfg, char *err, size_t err_len, const char *fmt,
                      ...) {
    if (err == NULL || err_len == 0)
        return 0;
    int n =
        snprintf(err, err_len, "%s:%d: admin.token_file: ", cfg->path, cfg->admin_token_file_line);
    if (n < 0 || (size_t)n >= err_len)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

// load_token reads |cfg|'s token file into |out| (TG_ADMIN_TOKEN_MAX bytes) and sets
// |*out_len|; 0 when no token_file is configured.
static int load_token(uint8_t *out, size_t *out_len, const struct tg_config *cfg, char *err,
                      size_t err_len) {
    *out_len = 0;
    const char *path = cfg->admin_token_file;
    if (path[0] == '\0')
        return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return token_fail(cfg, err, err_len, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return token_fail(cfg, err, err_len, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return token_fail(cfg, err, err_len, "%s is not a regular file", path);
    }
    if ((sb.st_mode & 077) != 0) {
        close(fd);
        return token_fail(cfg, err, err_len,
                          "%s has mode %04o: group and others must have no access (chmod 600)",
                          path, (unsigned)(sb.st_mode & 07777));
    }
    // Room for a final newline and one byte more, to tell a token that is too long.
    char buf[TG_ADMIN_TOKEN_MAX + 4];
    size_t len = 0;
    while (len < sizeof(buf)) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return token_fail(cfg, err, err_len, "cannot read %s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    int bad = 0;
    for (size_t i = 0; i < len; i++)
        bad |= (unsigned char)buf[i] <= ' ' || (unsigned char)buf[i] >= 0x7f;
    int wrong_len = len < TG_ADMIN_TOKEN_MIN || len > TG_ADMIN_TOKEN_MAX;
    if (!bad && !wrong_len)
        memcpy(out, buf, len);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (bad)
        return token_fail(cfg, err, err_len,
                          "%s: the token must be printable ASCII without blanks, on one line",
                          path);
    if (wrong_len)
        return token_fail(cfg, err, err_len, "%s: the token must be %d..%d characters", path,
                          TG_ADMIN_TOKEN_MIN, TG_ADMIN_TOKEN_MAX);
    *out_len = len;
    return 1;
}

int tg_admin_check_config(const struct tg_config *cfg, char *err, size_t err_len) {
    uint8_t token[TG_ADMIN_TOKEN_MAX];
    size_t len;
    int ok = load_token(token, &len, cfg, err, err_len);
    OPENSSL_cleanse(token, sizeof(token));
    return ok;
}

// ---------------------------------------------------------------------------------------------
// Life cycle.

struct tg_admin *tg_admin_start(const struct tg_admin_info *info, char *err, size_t err_len) {
    struct tg_admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    a->info = info;
    uint8_t token[TG_ADMIN_TOKEN_MAX];
    size_t token_len;
    if (!load_token(token, &token_len, info->cfg, err, err_len)) {
        free(a);
        return NULL;
    }
    int ok = tg_adminpolicy_init(&a->policy, info->cfg, token_len > 0 ? token : NULL, token_len);
    OPENSSL_cleanse(token, sizeof(token));
    const struct tg_target *t = &info->cfg->admin_listen;
    char where[80];
    tg_target_format(t, where, sizeof(where));
    if (!ok) {
        snprintf(err, err_len, "admin listen %s: cannot set up the access policy", where);
        free(a);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    if (t->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->daemon = MHD_start_daemon(
        flags, t->port, accept_policy, a, handle, a, MHD_OPTION_SOCK_ADDR,
        (const struct sockaddr *)&t->addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)TG_ADMIN_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)TG_ADMIN_CONN_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)TG_ADMIN_PER_IP_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)TG_ADMIN_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)TG_ADMIN_MEMORY_LIMIT, MHD_OPTION_END);
    if (a->daemon == NULL) {
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
