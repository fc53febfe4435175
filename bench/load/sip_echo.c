// tg-sip-responder: a minimal SIP UAS on plain TCP for the SIP bench. Every request that comes
// in is answered `SIP/2.0 200 OK` with its Via (all of them), From, To (a tag added when it has
// none), Call-ID and CSeq copied and Content-Length: 0. Framing is by Content-Length (a body is
// skipped); CRLF keepalives are ignored. One thread, epoll, non-blocking sockets.
//
//   tg-sip-responder --listen ADDR:PORT      (IPv4 only; runs until SIGINT/SIGTERM)
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MSG (64u * 1024u)
#define MAX_EVENTS 64

struct conn {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    struct conn *prev, *next; // every open connection, freed at exit
};

static struct conn *g_conns;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (*cap >= need)
        return 1;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (p == NULL)
        return 0;
    *buf = p;
    *cap = c;
    return 1;
}

static int out_add(struct conn *c, const char *p, size_t n) {
    if (!grow(&c->out, &c->out_cap, c->out_len + n))
        return 0;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 1;
}

// name_is: the header line starts with |name| or the compact form |compact|, then ':'.
static int name_is(const char *line, size_t len, const char *name, char compact) {
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return 0;
    size_t n = (size_t)(colon - line);
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    return (n == strlen(name) && strncasecmp(line, name, n) == 0) ||
           (compact && n == 1 && (line[0] | 0x20) == compact);
}

// answer writes the 200 for the request whose headers are |m| (|hlen| bytes, last CRLF in).
// header_number reads the decimal value of the header line |line| (|len| bytes, not
// NUL-terminated: never strtol here). Returns -1 when there is none or it is too large.
static long header_number(const char *line, size_t len) {
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return -1;
    size_t i = (size_t)(colon - line) + 1;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    long v = 0;
    size_t digits = 0;
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++, digits++) {
        v = v * 10 + (line[i] - '0');
        if (v > (long)MAX_MSG)
            return -1;
    }
    return digits > 0 ? v : -1;
}

static int answer(struct conn *c, const char *m, size_t hlen) {
    static const char status[] = "SIP/2.0 200 OK\r\n";
    if (!out_add(c, status, sizeof(status) - 1))
        return 0;
    const char *end = m + hlen;
    const char *line = memchr(m, '\n', hlen);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t len = eol ? (size_t)(eol - line) + 1 : (size_t)(end - line);
        if (name_is(line, len, "via", 'v') || name_is(line, len, "from", 'f') ||
            name_is(line, len, "call-id", 'i') || name_is(line, len, "cseq", 0)) {
            if (!out_add(c, line, len))
                return 0;
        } else if (name_is(line, len, "to", 't')) {
            size_t body = len;
            while (body > 0 && (line[body - 1] == '\n' || line[body - 1] == '\r'))
                body--;
            if (!out_add(c, line, body) ||
                (memmem(line, body, ";tag=", 5) == NULL && !out_add(c, ";tag=uas", 8)) ||
                !out_add(c, "\r\n", 2))
                return 0;
        }
        line = eol;
    }
    static const char tail[] = "Content-Length: 0\r\n\r\n";
    return out_add(c, tail, sizeof(tail) - 1);
}

// process answers every whole request in |c->in|; 0 when the connection must close.
static int process(struct conn *c) {
    size_t off = 0;
    for (;;) {
        const char *m = c->in + off;
        size_t avail = c->in_len - off;
        while (avail >= 2 && m[0] == '\r' && m[1] == '\n') {
            m += 2;
            off += 2;
            avail -= 2;
        }
        const char *hend = memmem(m, avail, "\r\n\r\n", 4);
        if (hend == NULL) {
            if (avail > MAX_MSG)
                return 0;
            break;
        }
        size_t hlen = (size_t)(hend - m) + 2;
        long clen = 0;
        const char *line = m;
        while (line < m + hlen) {
            const char *eol = memchr(line, '\n', (size_t)(m + hlen - line));
            size_t len = eol ? (size_t)(eol - line) : (size_t)(m + hlen - line);
            if (name_is(line, len, "content-length", 'l'))
                clen = header_number(line, len);
            if (eol == NULL)
                break;
            line = eol + 1;
        }
        if (clen < 0 || clen > (long)MAX_MSG)
            return 0;
        size_t total = hlen + 2 + (size_t)clen;
        if (total > avail)
            break;
        if (strncmp(m, "SIP/2.0 ", 8) != 0 && !answer(c, m, hlen)) // responses: ignored
            return 0;
        off += total;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 1;
}

// flush sends what is queued; 0 on a socket error.
static int flush(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    return 1;
}

static void conn_free(int ep, struct conn *c) {
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

int main(int argc, char **argv) {
    if (argc != 3 || strcmp(argv[1], "--listen") != 0) {
        fprintf(stderr, "usage: tg-sip-responder --listen ADDR:PORT\n");
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[2], ':');
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    if (colon == NULL || (size_t)(colon - argv[2]) >= sizeof(host)) {
        fprintf(stderr, "tg-sip-responder: bad address %s\n", argv[2]);
        return 2;
    }
    memcpy(host, argv[2], (size_t)(colon - argv[2]));
    host[colon - argv[2]] = '\0';
    int port = atoi(colon + 1);
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1 || port <= 0 || port > 65535) {
        fprintf(stderr, "tg-sip-responder: bad address %s\n", argv[2]);
        return 2;
    }
    sin.sin_port = htons((uint16_t)port);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 1024) != 0) {
        perror("tg-sip-responder: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("tg-sip-responder: epoll");
        return 1;
    }
    struct epoll_event evs[MAX_EVENTS];
    char buf[16384];
    while (!g_stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct conn *nc = calloc(1, sizeof(*nc));
                    if (nc == NULL) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) != 0) {
                        close(fd);
                        free(nc);
                        continue;
                    }
                    nc->next = g_conns;
                    if (g_conns != NULL)
                        g_conns->prev = nc;
                    g_conns = nc;
                }
                continue;
            }
            int ok = 1;
            if (evs[i].events & EPOLLIN) {
                for (;;) {
                    ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
                    if (r > 0) {
                        if (!grow(&c->in, &c->in_cap, c->in_len + (size_t)r)) {
                            ok = 0;
                            break;
                        }
                        memcpy(c->in + c->in_len, buf, (size_t)r);
                        c->in_len += (size_t)r;
                        continue;
                    }
                    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                        ok = 0;
                    break;
                }
                if (c->in_len > 0 && !process(c))
                    ok = 0;
            }
            if (!flush(c))
                ok = 0;
            if (ok && c->out_len > c->out_off) {
                struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            } else if (ok && (evs[i].events & EPOLLOUT)) {
                struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
            if (!ok || (evs[i].events & (EPOLLHUP | EPOLLERR)))
                conn_free(ep, c);
        }
    }
    while (g_conns != NULL)
        conn_free(ep, g_conns);
    close(ep);
    close(lfd);
    return 0;
}
