// tg-zc-send: does zero-copy send pay here? Streams 16 KiB sends (the size of a sealed bulk
// record) over a loopback TCP connection to a receiver thread that drains it, four ways:
// send(2), send(2) with MSG_ZEROCOPY, an io_uring send, an io_uring SEND_ZC (one send in
// flight, as the proxy keeps one per direction), and prints the sender's CPU time per byte
// (CLOCK_THREAD_CPUTIME_ID) and the share of zero-copy sends the kernel copied anyway. A way
// the kernel lacks is reported as unavailable, not as a failure.
//
//   tg-zc-send [--mib N] [--size BYTES]
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include <linux/errqueue.h> // after <time.h>: it uses struct timespec

enum way { WAY_SEND, WAY_MSG_ZEROCOPY, WAY_URING_SEND, WAY_URING_SEND_ZC, WAY_NUM };
static const char *const k_way_names[WAY_NUM] = {"send", "send+MSG_ZEROCOPY", "io_uring send",
                                                 "io_uring send_zc"};

struct run {
    uint64_t bytes, sent;
    uint32_t size;
    uint64_t zc_done, zc_copied; // zero-copy completions, and those the kernel copied
    double cpu_ns;
};

static double thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int tcp_pair(int *out_a, int *out_b) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0)
        return 0;
    *out_a = socket(AF_INET, SOCK_STREAM, 0);
    if (*out_a < 0 || connect(*out_a, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return 0;
    *out_b = accept(l, NULL, NULL);
    close(l);
    int one = 1;
    setsockopt(*out_a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return *out_b >= 0;
}

static void *drain(void *arg) {
    int fd = *(int *)arg;
    static uint8_t buf[1 << 18];
    while (recv(fd, buf, sizeof(buf), 0) > 0) {
    }
    return NULL;
}

// reap_errqueue counts the MSG_ZEROCOPY completions queued on |fd| (ranges of sends).
static void reap_errqueue(int fd, struct run *r) {
    for (;;) {
        char ctl[128];
        struct msghdr mh = {.msg_control = ctl, .msg_controllen = sizeof(ctl)};
        if (recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            return;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
            const struct sock_extended_err *ee = (const void *)CMSG_DATA(cm);
            if (ee->ee_origin != SO_EE_ORIGIN_ZEROCOPY)
                continue;
            uint64_t n = (uint64_t)(ee->ee_data - ee->ee_info) + 1;
            r->zc_done += n;
            if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
                r->zc_copied += n;
        }
    }
}

static int run_socket(int fd, const uint8_t *buf, struct run *r, int zc) {
    int one = 1;
    if (zc && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) != 0)
        return 0;
    uint64_t calls = 0;
    while (r->sent < r->bytes) {
        ssize_t n = send(fd, buf, r->size, zc ? MSG_ZEROCOPY : 0);
        if (n < 0 && errno == ENOBUFS) { // too many completions outstanding
            reap_errqueue(fd, r);
            continue;
        }
        if (n <= 0)
            return 0;
        r->sent += (uint64_t)n;
        if (zc && ++calls % 32 == 0)
            reap_errqueue(fd, r);
    }
    while (zc && r->zc_done < calls) {
        reap_errqueue(fd, r);
        usleep(100);
    }
    return 1;
}

// liburing 2.3 predates the kernel's report of whether a zero-copy send was copied (6.2).
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

// uring_cqe takes one completion: a notification is counted, a send's result added to
// |r->sent| (returns 1 for it). Returns -1 on failure.
static int uring_cqe(struct io_uring *ring, struct run *r, uint64_t *notifs_due) {
    struct io_uring_cqe *cqe;
    if (io_uring_wait_cqe(ring, &cqe) != 0)
        return -1;
    int ret = 1;
    if (cqe->flags & IORING_CQE_F_NOTIF) {
        (*notifs_due)--;
        r->zc_done++;
        r->zc_copied += (cqe->res & IORING_NOTIF_USAGE_ZC_COPIED) != 0;
        ret = 0;
    } else if (cqe->res <= 0) {
        ret = -1;
    } else {
        r->sent += (uint64_t)cqe->res;
        *notifs_due += (cqe->flags & IORING_CQE_F_MORE) != 0;
    }
    io_uring_cqe_seen(ring, cqe);
    return ret;
}

static int run_uring(int fd, const uint8_t *buf, struct run *r, int zc) {
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0)
        return 0;
    uint64_t notifs_due = 0;
    int ok = 1;
    while (ok && r->sent < r->bytes) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        if (zc) {
            io_uring_prep_send_zc(sqe, fd, buf, r->size, 0, 0);
            sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
        } else {
            io_uring_prep_send(sqe, fd, buf, r->size, 0);
        }
        io_uring_submit(&ring);
        int got;
        while ((got = uring_cqe(&ring, r, &notifs_due)) == 0) {
        }
        ok = got > 0;
    }
    while (ok && notifs_due > 0) // the buffers are the kernel's until these arrive
        ok = uring_cqe(&ring, r, &notifs_due) >= 0;
    io_uring_queue_exit(&ring);
    return ok;
}

static int run_way(enum way w, struct run *r) {
    int a, b;
    if (!tcp_pair(&a, &b))
        return 0;
    pthread_t th;
    pthread_create(&th, NULL, drain, &b);
    uint8_t *buf = malloc(r->size);
    memset(buf, 0x5a, r->size);
    double t0 = thread_cpu_ns();
    int ok = w == WAY_SEND           ? run_socket(a, buf, r, 0)
             : w == WAY_MSG_ZEROCOPY ? run_socket(a, buf, r, 1)
             : w == WAY_URING_SEND   ? run_uring(a, buf, r, 0)
                                     : run_uring(a, buf, r, 1);
    r->cpu_ns = thread_cpu_ns() - t0;
    shutdown(a, SHUT_WR);
    pthread_join(th, NULL);
    close(a);
    close(b);
    free(buf);
    return ok;
}

int main(int argc, char **argv) {
    uint64_t mib = 512;
    uint32_t size = 16384 + 22; // one full TLS 1.3 record: 16 KiB + header and tag
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--mib") == 0)
            mib = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--size") == 0)
            size = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    }
    if (mib == 0 || size == 0 || size > (1u << 20)) {
        fprintf(stderr, "usage: tg-zc-send [--mib N] [--size BYTES]\n");
        return 2;
    }
    printf("way,sender_cpu_ns_per_byte,zero_copy_completions,copied_by_kernel\n");
    for (int w = 0; w < WAY_NUM; w++) {
        struct run r = {.bytes = mib << 20, .size = size};
        if (!run_way((enum way)w, &r)) {
            printf("%s,unavailable,,\n", k_way_names[w]);
            continue;
        }
        printf("%s,%.3f,%llu,%llu\n", k_way_names[w], r.cpu_ns / (double)r.sent,
               (unsigned long long)r.zc_done, (unsigned long long)r.zc_copied);
    }
    return 0;
}
