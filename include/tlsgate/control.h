#ifndef TLSGATE_CONTROL_H
#define TLSGATE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "tlsgate/config.h"
#include "tlsgate/tls.h"

// The control plane's state: the current configuration generation (our certificate, key, CA
// bundle, peer names and the contexts built from them), reload, certificate expiry, and what
// /status shows. Everything here runs off the data path; a mutex serialises reloads (SIGHUP on
// the control thread, POST /reload on the admin thread) and status reads. The control knows
// nothing of the workers: a validated generation leaves through the publisher main wires in.

struct tg_control;

// tg_publish_fn hands a validated generation's contexts to the workers (each takes its own
// references). Returns 0 when it could not (memory short).
typedef int (*tg_publish_fn)(void *arg, SSL_CTX *server, SSL_CTX *client);

// tg_control_new takes ownership of |tls| (heap-allocated, already built from |cfg|, its
// certificate already checked) as the first generation. |cfg| is borrowed: the listeners,
// timeouts and buffer sizes it holds are fixed for the life of the process; a reload re-reads
// only what makes a generation ([tls]). Returns NULL when memory is short.
struct tg_control *tg_control_new(const struct tg_config *cfg, struct tg_tls *tls,
                                  int allow_noncompliant);

// tg_control_set_publisher sets how new generations reach the workers (NULL: they are not
// handed out). Setting it waits for a reload in progress.
void tg_control_set_publisher(struct tg_control *c, tg_publish_fn publish, void *arg);

// tg_control_free releases the control and its generation. NULL is a no-op.
void tg_control_free(struct tg_control *c);

// tg_control_reload re-reads the configuration file, builds a new generation, runs every rule
// on our certificate, and publishes it to the workers only if it passes: new handshakes then
// present the new certificate; open connections keep theirs. A failed reload changes nothing.
// A successful one names every setting the file changed that only a restart applies
// (tg_config_diff against the configuration in service): `not_applied` in the JSON result and
// in /status's last_reload, and a `reload_partial` warning in the log.
// |trigger| names the cause in the log ("SIGHUP", "admin"). |out_json| (may be NULL) receives a
// one-line JSON result, cut to fit |out_len| (names that do not fit are counted, `"N more"`).
// Returns 1 when the new generation was published.
int tg_control_reload(struct tg_control *c, const char *trigger, char *out_json, size_t out_len);

// tg_control_tick runs periodic checks: expiry warnings at 30, 7 and 1 days left.
void tg_control_tick(struct tg_control *c);

// tg_control_status_json appends to |buf| (at most |len| bytes, NUL-terminated) the
// control's part of /status, as JSON members without the surrounding braces:
// "certificate":{...},"ca":{...},"last_reload":{...,"not_applied":[...]}. Returns the length.
size_t tg_control_status_json(struct tg_control *c, char *buf, size_t len);

// tg_control_metrics appends Prometheus lines for reloads and certificate expiry.
size_t tg_control_metrics(struct tg_control *c, char *buf, size_t len);

#endif // TLSGATE_CONTROL_H
