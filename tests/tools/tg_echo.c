// tg-echo: a plain TCP echo (or sink) server used as the backend in integration tests.
//
//   tg-echo --listen ADDR:PORT [--sink] [--port-file FILE]
//
// ADDR is an IPv4 literal or a bracketed IPv6 literal ("127.0.0.1:0", "[::1]:0"). The bound
// port is printed as "port=N" on stdout and, with --port-file, written (atomically) to FILE.
// One thread, epoll, non-blocking sockets. Each connection echoes through a bounded buffer:
// while the buffer is full the connection is not read (backpressure). When a client half-closes,
// the buffered bytes are sent, then the write side is shut down; the socket is closed when both
// directions are done. With --sink input is discarded and nothing is sent. SIGTERM/SIGINT exit 0.

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define TG_ECHO_BUF_SIZE (256u * 1024u)
#define TG_ECHO_MAX_EVENTS 256

// tg_echo_conn is one accepted connection. |buf| holds bytes read but not yet echoed, in
// [start, end); it is allocated on the first read and freed when the connection closes.
struct tg_echo_conn {
    int fd;
    uint32_t start;
    uint32_t end;
    uint32_t events; // the epoll interest currently registered
    uint8_t read_eof;
    uint8_t write_shut;
    uint8_t *buf;
};

// Sentinels stored in epoll_event.data.ptr for the two non-connection descriptors.
static char tg_echo_listen_tag;
static char tg_echo_signal_tag;

static int tg_echo_sink;
static int tg_echo_epfd = -1;
static uint64_t tg_echo_num_open;
static uint8_t tg_echo_scratch[64 * 1024];

static void tg_echo_usage(void) {
    fprintf(stderr, "usage: tg-echo --listen ADDR:PORT [--sink] [--port-file FILE]\n"
                    "  ADDR: IPv4 (127.0.0.1:0) or bracketed IPv6 ([::1]:0); port 0 = ephemeral\n");
}

// tg_echo_parse_addr parses "a.b.c.d:port" or "[v6]:port" into |out_ss|. Returns 1 on success.
static int tg_echo_parse_addr(struct sockaddr_storage *out_ss, socklen_t *out_len,
                              const char *text) {
    char host[128];
    const char *colon;
    const char *port_text;
    memset(out_ss, 0, sizeof(*out_ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_text = close + 2;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_text = colon + 1;
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(port_text, &end, 10);
    if (errno != 0 || *port_text == '\0' || *end != '\0' || port > 65535) {
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out_ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out_ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *out_len = sizeof(*sin);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *out_len = sizeof(*sin6);
        return 1;
    }
    return 0;
}

static void tg_echo_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) {
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "tg-echo: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    }
}

// tg_echo_write_port_file writes "N\n" to |path| via a temporary file and rename, so a reader
// never sees a partial number. Returns 1 on success.
static int tg_echo_write_port_file(const char *path, unsigned port) {
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        return 0;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return 0;
    }
    int ok = fprintf(f, "%u\n", port) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return 0;
    }
    return 1;
}

static void tg_echo_close(struct tg_echo_conn *conn) {
    // Closing the descriptor removes it from the epoll set.
    close(conn->fd);
    free(conn->buf);
    free(conn);
    tg_echo_num_open--;
}

// tg_echo_update_interest registers the epoll interest the connection's state calls for:
// EPOLLIN while it may read and has room, EPOLLOUT while it has bytes to send.
static int tg_echo_update_interest(struct tg_echo_conn *conn) {
    uint32_t want = 0;
    if (!conn->read_eof && (tg_echo_sink || conn->end < TG_ECHO_BUF_SIZE || conn->start > 0)) {
        want |= EPOLLIN;
    }
    if (conn->end > conn->start) {
        want |= EPOLLOUT;
    }
    if (want == conn->events) {
        return 1;
    }
    struct epoll_event ev = {.events = want, .data.ptr = conn};
    if (epoll_ctl(tg_echo_epfd, EPOLL_CTL_MOD, conn->fd, &ev) != 0) {
        return 0;
    }
    conn->events = want;
    return 1;
}

// tg_echo_do_read reads what is available into the buffer (or discards it in sink mode).
// Returns 0 if the connection failed and must be closed.
static int tg_echo_do_read(struct tg_echo_conn *conn) {
    for (;;) {
        uint8_t *dst;
        size_t room;
        if (tg_echo_sink) {
            dst = tg_echo_scratch;
            room = sizeof(tg_echo_scratch);
        } else {
            if (conn->buf == NULL) {
                conn->buf = malloc(TG_ECHO_BUF_SIZE);
                if (conn->buf == NULL) {
                    return 0;
                }
            }
            if (conn->start == conn->end) {
                conn->start = conn->end = 0;
            }
            if (conn->end == TG_ECHO_BUF_SIZE && conn->start > 0) {
                memmove(conn->buf, conn->buf + conn->start, conn->end - conn->start);
                conn->end -= conn->start;
                conn->start = 0;
            }
            room = TG_ECHO_BUF_SIZE - conn->end;
            if (room == 0) {
                return 1;
            }
            dst = conn->buf + conn->end;
        }
        ssize_t n = read(conn->fd, dst, room);
        if (n > 0) {
            if (!tg_echo_sink) {
                conn->end += (uint32_t)n;
            }
            continue;
        }
        if (n == 0) {
            conn->read_eof = 1;
            return 1;
        }
        if (errno == EINTR) {
            continue;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

// tg_echo_do_write sends buffered bytes. Returns 0 if the connection failed.
static int tg_echo_do_write(struct tg_echo_conn *conn) {
    while (conn->end > conn->start) {
        ssize_t n = send(conn->fd, conn->buf + conn->start, conn->end - conn->start, MSG_NOSIGNAL);
        if (n > 0) {
            conn->start += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return 1;
}

static void tg_echo_handle(struct tg_echo_conn *conn, uint32_t events) {
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !conn->read_eof) {
        if (!tg_echo_do_read(conn)) {
            tg_echo_close(conn);
            return;
        }
    }
    if (!tg_echo_do_write(conn)) {
        tg_echo_close(conn);
        return;
    }
    if (conn->read_eof && conn->end == conn->start && !conn->write_shut) {
        if (shutdown(conn->fd, SHUT_WR) != 0) {
            tg_echo_close(conn);
            return;
        }
        conn->write_shut = 1;
    }
    if (conn->read_eof && conn->write_shut) {
        tg_echo_close(conn);
        return;
    }
    if ((events & EPOLLERR) || !tg_echo_update_interest(conn)) {
        tg_echo_close(conn);
    }
}

static void tg_echo_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                fprintf(stderr, "tg-echo: accept: %s\n", strerror(errno));
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct tg_echo_conn *conn = calloc(1, sizeof(*conn));
        if (conn == NULL) {
            close(fd);
            continue;
        }
        conn->fd = fd;
        conn->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = conn};
        if (epoll_ctl(tg_echo_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(conn);
            continue;
        }
        tg_echo_num_open++;
    }
}

int main(int argc, char **argv) {
    const char *listen_text = NULL;
    const char *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_text = argv[++i];
        } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
            port_file = argv[++i];
        } else if (strcmp(argv[i], "--sink") == 0) {
            tg_echo_sink = 1;
        } else {
            tg_echo_usage();
            return 2;
        }
    }
    struct sockaddr_storage ss;
    socklen_t ss_len;
    if (listen_text == NULL || !tg_echo_parse_addr(&ss, &ss_len, listen_text)) {
        tg_echo_usage();
        return 2;
    }

    tg_echo_raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(lfd, (struct sockaddr *)&ss, ss_len) != 0 || listen(lfd, 65535) != 0) {
        fprintf(stderr, "tg-echo: cannot listen on %s: %s\n", listen_text, strerror(errno));
        return 1;
    }
    ss_len = sizeof(ss);
    if (getsockname(lfd, (struct sockaddr *)&ss, &ss_len) != 0) {
        fprintf(stderr, "tg-echo: getsockname: %s\n", strerror(errno));
        return 1;
    }
    unsigned port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    tg_echo_epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &tg_echo_listen_tag};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &tg_echo_signal_tag};
    if (sfd < 0 || tg_echo_epfd < 0 || epoll_ctl(tg_echo_epfd, EPOLL_CTL_ADD, lfd, &lev) != 0 ||
        epoll_ctl(tg_echo_epfd, EPOLL_CTL_ADD, sfd, &sev) != 0) {
        fprintf(stderr, "tg-echo: epoll/signalfd setup: %s\n", strerror(errno));
        return 1;
    }

    if (port_file != NULL && !tg_echo_write_port_file(port_file, port)) {
        fprintf(stderr, "tg-echo: cannot write %s: %s\n", port_file, strerror(errno));
        return 1;
    }
    printf("port=%u\n", port);
    fflush(stdout);

    struct epoll_event events[TG_ECHO_MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(tg_echo_epfd, events, TG_ECHO_MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "tg-echo: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == &tg_echo_signal_tag) {
                return 0;
            }
            if (ptr == &tg_echo_listen_tag) {
                tg_echo_accept(lfd);
                continue;
            }
            tg_echo_handle(ptr, events[i].events);
        }
    }
}
