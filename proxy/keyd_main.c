// tlsgate-keyd: holds tlsgate's private keys in a process of its own and signs digests for
// tlsgate's signer threads over a Unix SOCK_SEQPACKET socket (see include/tlsgate/keyd.h).
//
//   tlsgate-keyd --socket PATH [--socket-group GROUP] --key FILE [--key FILE ...]
//                --allow-uid UID [--allow-uid UID ...]
//
// One thread, poll(2) over the listening socket and the clients. Every request a client has
// queued is answered in one pass (a handshake storm arrives as a batch, not one wake-up per
// signature). A connecting process whose uid is not allowed is refused and logged. The keys are
// read once at start; nothing ever sends them out.
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tlsgate/keyd.h"
#include "tlsgate/log.h"
#include "tlsgate/tls.h"
#include "tlsgate/version.h"

#define MAX_KEYS 8
#define MAX_UIDS 16
#define MAX_CLIENTS 256
#define BATCH 64 // requests answered per client per pass

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

struct keyd {
    EVP_PKEY *keys[MAX_KEYS];
    uint8_t hashes[MAX_KEYS][32];
    size_t num_keys;
    uid_t uids[MAX_UIDS];
    size_t num_uids;
    const char *path;
    gid_t group; // the socket's group (mode 0660): tlsgate's group; (gid_t)-1: keyd's own
    unsigned long long signed_ok, refused;
};

static void usage(FILE *f) {
    fprintf(f, "usage: tlsgate-keyd --socket PATH [--socket-group GROUP] --key FILE [--key FILE "
               "...] --allow-uid UID|USER [--allow-uid ...]\n"
               "  Holds the private keys and signs digests for tlsgate ([tls] key = keyd:PATH).\n");
}

static int parse_uid(const char *s, uid_t *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s != '\0' && *end == '\0' && errno == 0 && v < 0xffffffffu) {
        *out = (uid_t)v;
        return 1;
    }
    struct passwd *pw = getpwnam(s);
    if (pw == NULL)
        return 0;
    *out = pw->pw_uid;
    return 1;
}

static int allowed(const struct keyd *k, uid_t uid) {
    for (size_t i = 0; i < k->num_uids; i++)
        if (k->uids[i] == uid)
            return 1;
    return 0;
}

static int listen_on(const char *path, gid_t group) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        TG_ERROR("keyd_listen_failed", "socket=%s reason=\"path too long\"", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    // A socket file left by a keyd that died is replaced; a live keyd's is not taken over.
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            TG_ERROR("keyd_listen_failed", "socket=%s reason=\"another keyd serves it\"", path);
            close(fd);
            return -1;
        }
        unlink(path);
    }
    // The socket is made under a temporary name and renamed into place once it listens, with
    // its group and mode: whoever sees the path can connect (a tlsgate started right after
    // keyd never meets a socket that refuses). Connecting needs write permission: owner and
    // group only; the uid check at accept is the real gate.
    struct sockaddr_un tmp = {.sun_family = AF_UNIX};
    int n = snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp.sun_path)) {
        TG_ERROR("keyd_listen_failed", "socket=%s reason=\"path too long\"", path);
        close(fd);
        return -1;
    }
    unlink(tmp.sun_path);
    mode_t old = umask(0117);
    int ok = bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) == 0 && listen(fd, 64) == 0;
    umask(old);
    if (ok && group != (gid_t)-1)
        ok = chown(tmp.sun_path, (uid_t)-1, group) == 0;
    ok = ok && rename(tmp.sun_path, path) == 0;
    if (!ok) {
        TG_ERROR("keyd_listen_failed", "socket=%s reason=\"%s\"", path, strerror(errno));
        unlink(tmp.sun_path);
        close(fd);
        return -1;
    }
    return fd;
}

// serve answers every request |fd| has queued, up to BATCH. Returns 0 when the client is gone.
static int serve(struct keyd *k, int fd) {
    uint8_t in[TG_KEYD_REQ_LEN + 1], out[TG_KEYD_RESP_LEN];
    for (int i = 0; i < BATCH; i++) {
        ssize_t n = recv(fd, in, sizeof(in), MSG_DONTWAIT | MSG_TRUNC);
        if (n == 0)
            return 0;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        // MSG_TRUNC gives the real length: an oversized packet is malformed, not cut short.
        size_t len = (size_t)n > sizeof(in) ? sizeof(in) : (size_t)n;
        size_t m =
            tg_keyd_handle(k->keys, (const uint8_t(*)[32])k->hashes, k->num_keys, in, len, out);
        if (m >= TG_KEYD_RESP_HDR_LEN && (out[8] << 8 | out[9]) == TG_KEYD_OK)
            k->signed_ok++;
        else
            k->refused++;
        if (send(fd, out, m, MSG_NOSIGNAL) != (ssize_t)m)
            return 0;
    }
    return 1;
}

static int run(struct keyd *k) {
    int lfd = listen_on(k->path, k->group);
    if (lfd < 0)
        return 1;
    struct pollfd pfd[1 + MAX_CLIENTS];
    size_t n = 1;
    pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    TG_INFO("keyd_started", "socket=%s keys=%zu allowed_uids=%zu pid=%d", k->path, k->num_keys,
            k->num_uids, (int)getpid());
    while (!g_stop) {
        int r = poll(pfd, n, 1000);
        tg_log_flush();
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        for (size_t i = 1; i < n; i++) {
            if (pfd[i].revents == 0)
                continue;
            if ((pfd[i].revents & POLLIN) && serve(k, pfd[i].fd))
                continue;
            close(pfd[i].fd); // gone, or hung up with nothing left to answer
            pfd[i--] = pfd[--n];
        }
        if (pfd[0].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            struct ucred cred;
            socklen_t cl = sizeof(cred);
            if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || !allowed(k, cred.uid)) {
                TG_WARN("keyd_peer_refused", "uid=%ld pid=%ld reason=\"uid not allowed\"",
                        (long)cred.uid, (long)cred.pid);
                close(c);
                continue;
            }
            if (n == 1 + MAX_CLIENTS) {
                TG_WARN("keyd_peer_refused", "uid=%ld pid=%ld reason=\"too many clients\"",
                        (long)cred.uid, (long)cred.pid);
                close(c);
                continue;
            }
            TG_INFO("keyd_peer", "uid=%ld pid=%ld", (long)cred.uid, (long)cred.pid);
            pfd[n++] = (struct pollfd){.fd = c, .events = POLLIN};
        }
    }
    for (size_t i = 0; i < n; i++)
        close(pfd[i].fd);
    unlink(k->path);
    TG_INFO("keyd_stopped", "signed=%llu refused=%llu", k->signed_ok, k->refused);
    return 0;
}

int main(int argc, char **argv) {
    struct keyd k = {.group = (gid_t)-1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("tlsgate-keyd %s\n", TLSGATE_VERSION);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--socket") == 0) {
            k.path = v;
        } else if (strcmp(a, "--key") == 0) {
            char err[512];
            if (k.num_keys == MAX_KEYS) {
                fprintf(stderr, "tlsgate-keyd: at most %d keys\n", MAX_KEYS);
                return 2;
            }
            EVP_PKEY *key = tg_tls_read_key_file(v, err, sizeof(err));
            if (key == NULL) {
                fprintf(stderr, "tlsgate-keyd: %s\n", err);
                return 2;
            }
            k.keys[k.num_keys] = key;
            tg_keyd_spki_hash(key, k.hashes[k.num_keys]);
            k.num_keys++;
        } else if (strcmp(a, "--socket-group") == 0) {
            struct group *gr = getgrnam(v);
            char *end;
            unsigned long g = strtoul(v, &end, 10);
            if (gr != NULL)
                k.group = gr->gr_gid;
            else if (*v != '\0' && *end == '\0')
                k.group = (gid_t)g;
            else {
                fprintf(stderr, "tlsgate-keyd: --socket-group %s: no such group\n", v);
                return 2;
            }
        } else if (strcmp(a, "--allow-uid") == 0) {
            if (k.num_uids == MAX_UIDS || !parse_uid(v, &k.uids[k.num_uids])) {
                fprintf(stderr, "tlsgate-keyd: --allow-uid %s: no such user\n", v);
                return 2;
            }
            k.num_uids++;
        } else {
            fprintf(stderr, "tlsgate-keyd: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (k.path == NULL || k.num_keys == 0 || k.num_uids == 0) {
        fprintf(stderr, "tlsgate-keyd: --socket, --key and --allow-uid are required\n");
        usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = run(&k);
    for (size_t i = 0; i < k.num_keys; i++)
        EVP_PKEY_free(k.keys[i]);
    return rc;
}
