// Unit tests of the kernel feature probe (proxy/kfeat.c): each verdict is checked against a
// second, independent witness of the same feature (the kernel's list of loaded upper-layer
// protocols, a real zero-copy send on a ring, a real MSG_ZEROCOPY send and its completion on
// the error queue), so a probe that lies in either direction fails. A witness that cannot run
// here (no /proc, no io_uring) skips loudly.
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include <linux/errqueue.h> // after <time.h>: it uses struct timespec

#include "tlsgate/kfeat.h"

static int tcp_pair(int *out_a, int *out_b) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0)
        return 0;
    *out_a = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*out_a, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return 0;
    *out_b = accept(l, NULL, NULL);
    close(l);
    return *out_b >= 0;
}

// The kernel lists the upper-layer protocols it has loaded; the probe may load "tls" itself
// (module autoloading), so the list is read after it.
static void test_ktls_matches_available_ulp(void **state) {
    (void)state;
    struct tg_kfeats k;
    tg_kfeat_probe(&k);
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
    if (f == NULL) {
        fprintf(stderr, "SKIP: /proc/sys/net/ipv4/tcp_available_ulp unreadable\n");
        skip();
    }
    char line[256] = "";
    if (fgets(line, sizeof(line), f) == NULL)
        line[0] = '\0';
    fclose(f);
    int listed = 0;
    for (char *tok = strtok(line, " \n"); tok != NULL; tok = strtok(NULL, " \n"))
        listed |= strcmp(tok, "tls") == 0;
    fprintf(stderr, "ktls: probe=%u tcp_available_ulp=\"%s\"\n", k.has[TG_KFEAT_KTLS], line);
    assert_int_equal(k.has[TG_KFEAT_KTLS], listed);
}

// A zero-copy send on a ring: it completes with the byte count where the opcode exists, and
// with -EINVAL where it does not.
static void test_send_zc_matches_a_real_send(void **state) {
    (void)state;
    struct tg_kfeats k;
    tg_kfeat_probe(&k);
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0) {
        fprintf(stderr, "SKIP: no io_uring here\n");
        skip();
    }
    int a, b;
    assert_true(tcp_pair(&a, &b));
    static const char msg[] = "zero-copy probe";
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_send_zc(sqe, a, msg, sizeof(msg), 0, 0);
    assert_int_equal(io_uring_submit(&ring), 1);
    struct io_uring_cqe *cqe;
    assert_int_equal(io_uring_wait_cqe(&ring, &cqe), 0);
    int res = cqe->res;
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    io_uring_cqe_seen(&ring, cqe);
    if (more) { // the notification: the buffer is ours again
        assert_int_equal(io_uring_wait_cqe(&ring, &cqe), 0);
        assert_true(cqe->flags & IORING_CQE_F_NOTIF);
        io_uring_cqe_seen(&ring, cqe);
    }
    fprintf(stderr, "send_zc: probe=%u res=%d\n", k.has[TG_KFEAT_SEND_ZC], res);
    if (k.has[TG_KFEAT_SEND_ZC]) {
        assert_int_equal(res, (int)sizeof(msg));
        char got[sizeof(msg)];
        assert_int_equal(recv(b, got, sizeof(got), MSG_WAITALL), (int)sizeof(msg));
        assert_memory_equal(got, msg, sizeof(msg));
    } else {
        assert_int_equal(res, -EINVAL);
    }
    close(a);
    close(b);
    io_uring_queue_exit(&ring);
}

// With SO_ZEROCOPY, a MSG_ZEROCOPY send reports its completion on the socket's error queue.
static void test_so_zerocopy_matches_a_real_send(void **state) {
    (void)state;
    struct tg_kfeats k;
    tg_kfeat_probe(&k);
    int a, b;
    assert_true(tcp_pair(&a, &b));
    int one = 1;
    int set = setsockopt(a, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
    assert_int_equal(k.has[TG_KFEAT_SO_ZEROCOPY], set);
    if (set) {
        static const char msg[] = "zero-copy";
        assert_int_equal(send(a, msg, sizeof(msg), MSG_ZEROCOPY), (int)sizeof(msg));
        char got[sizeof(msg)];
        assert_int_equal(recv(b, got, sizeof(got), MSG_WAITALL), (int)sizeof(msg));
        char ctl[128];
        struct msghdr mh = {.msg_control = ctl, .msg_controllen = sizeof(ctl)};
        ssize_t r = -1;
        for (int i = 0; i < 1000 && r < 0; i++) { // the completion is queued asynchronously
            r = recvmsg(a, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
            if (r < 0)
                usleep(1000);
        }
        assert_true(r >= 0);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        assert_non_null(cm);
        const struct sock_extended_err *ee = (const void *)CMSG_DATA(cm);
        assert_int_equal(ee->ee_origin, SO_EE_ORIGIN_ZEROCOPY);
    }
    close(a);
    close(b);
}

static void test_names(void **state) {
    (void)state;
    for (unsigned i = 0; i < TG_KFEAT_NUM; i++) {
        assert_string_not_equal(tg_kfeat_name((enum tg_kfeat)i), "?");
        for (unsigned j = 0; j < i; j++)
            assert_string_not_equal(tg_kfeat_name((enum tg_kfeat)i),
                                    tg_kfeat_name((enum tg_kfeat)j));
    }
    assert_string_equal(tg_kfeat_name(TG_KFEAT_KTLS), "ktls");
    assert_string_equal(tg_kfeat_name(TG_KFEAT_NUM), "?");
    assert_string_equal(tg_kfeat_name((enum tg_kfeat) - 1), "?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ktls_matches_available_ulp),
        cmocka_unit_test(test_send_zc_matches_a_real_send),
        cmocka_unit_test(test_so_zerocopy_matches_a_real_send),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
