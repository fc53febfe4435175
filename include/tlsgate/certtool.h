#ifndef TLSGATE_CERTTOOL_H
#define TLSGATE_CERTTOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/base.h>
#include <openssl/x509.h>

// Certificate lifecycle commands: `tlsgate csr` (a new key and a certificate signing request for
// the SBC's FQDN) and `tlsgate cert-check` (our certificate's rules, tg_policy_check_own, over
// files, as text or JSON). The builders (name check, key, CSR) do no I/O; the two *_main
// functions read and write the files they are given and print to |out| / |err|.

// Exit codes of both commands.
enum tg_certtool_exit {
    TG_CERTTOOL_OK = 0,    // csr: both files written; cert-check: no rule FAILed
    TG_CERTTOOL_FAIL = 1,  // csr: a file exists or cannot be written; cert-check: a rule FAILed
    TG_CERTTOOL_USAGE = 2, // bad arguments (csr: key and CSR outputs that are one file), or
                           // (cert-check) an input file that cannot be read
};

// TG_CERTTOOL_CN_MAX is the longest CN X.509 allows (RFC 5280 ub-common-name), and so the
// longest FQDN that can be both CN and DNS SAN.
#define TG_CERTTOOL_CN_MAX 64

// tg_certtool_check_fqdn returns 1 when |name| is a host name that can stand as CN and DNS SAN
// of an SBC certificate: 1 to 64 bytes, at least two dot-separated labels of 1 to 63 letters,
// digits and hyphens, no label starting or ending with a hyphen, a last label that is not all
// digits (no IP addresses), no trailing dot and no wildcard. Case is allowed and kept. On
// failure it returns 0 and writes the reason to |err| (|err_len| bytes; may be NULL).
int tg_certtool_check_fqdn(const char *name, char *err, size_t err_len);

// tg_certtool_key_new generates a new private key: ECDSA P-256 when |ec| is set, else RSA
// with |rsa_bits| bits (exponent 65537). It enforces no floor (the CLI does). The caller owns
// the key. NULL on failure.
EVP_PKEY *tg_certtool_key_new(int ec, unsigned rsa_bits);

// tg_certtool_csr_new builds a PKCS#10 request for |fqdn| signed with |key| (SHA-256): subject
// CN=|fqdn| (UTF8String), and an extensionRequest attribute holding subjectAltName DNS:|fqdn|
// and extendedKeyUsage serverAuth, clientAuth. |fqdn| is used byte for byte, case kept; it must
// pass tg_certtool_check_fqdn. The caller owns the request. NULL on failure.
X509_REQ *tg_certtool_csr_new(EVP_PKEY *key, const char *fqdn);

// tg_certtool_pem_kind names the most valuable PEM object in the |len| bytes at |data|, for a
// refusal to overwrite them: "a private key" (any `-----BEGIN ...PRIVATE KEY-----` block), else
// "a certificate", else "a CSR"; NULL when there is no such block. No I/O.
const char *tg_certtool_pem_kind(const uint8_t *data, size_t len);

// tg_certtool_same_file returns 1 when the paths |a| and |b| name one file: for files that exist,
// the same device and inode (symbolic links followed, hard links included); for files that do
// not exist yet, the same real path of the directory and the same last component. It reads the
// file system but changes nothing.
int tg_certtool_same_file(const char *a, const char *b);

// tg_certtool_csr_main runs `tlsgate csr` with the |argc| arguments at |argv| (those after the
// word "csr"): --fqdn NAME, --key-bits 2048|3072|4096 (1024 with --allow-weak), --ec,
// --key-out FILE, --csr-out FILE, --force, --allow-weak. The key file is created with mode 0600
// (open with O_CREAT|O_EXCL) and the CSR with mode 0644; an existing file is never replaced
// without --force (then it is replaced atomically by rename), and the refusal says what it holds
// (a private key, a CSR, ...). Key and CSR outputs that are one file (tg_certtool_same_file) are
// a usage error, --force or not. Reports go to |out|, errors and warnings to |err|. Returns a
// tg_certtool_exit code.
int tg_certtool_csr_main(int argc, char **argv, FILE *out, FILE *err);

// tg_certtool_cert_check_main runs `tlsgate cert-check` with the |argc| arguments at |argv|
// (those after the word "cert-check"): --cert FILE (leaf first, then any intermediates),
// --key FILE, --fqdn NAME, --ca FILE, --json. Prints one PASS / WARN / FAIL line per rule of
// tg_policy_check_own (or one JSON object) to |out|. Without --fqdn the name rules use the
// subject CN and say so. Returns a tg_certtool_exit code.
int tg_certtool_cert_check_main(int argc, char **argv, FILE *out, FILE *err);

#endif // TLSGATE_CERTTOOL_H
