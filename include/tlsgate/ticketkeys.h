#ifndef TLSGATE_TICKETKEYS_H
#define TLSGATE_TICKETKEYS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// Session ticket keys shared between tlsgate instances (`[tls] ticket_keys`). The key file
// holds 1..TG_TICKET_KEYS_MAX keys, one per line, each the base64 of TG_TICKET_KEY_LEN random
// bytes: a 16-byte key name, a 32-byte HMAC-SHA256 key and a 32-byte AES-256 key. Blank lines
// and lines starting with '#' are ignored. The LAST key is the newest: it encrypts new
// tickets; every key decrypts (found by its name). Rotation: write a file whose last line is a
// new key, keeping the previous ones, and reload.

#define TG_TICKET_KEYS_MAX 8
#define TG_TICKET_KEY_NAME_LEN 16
#define TG_TICKET_KEY_SECRET_LEN 32
#define TG_TICKET_KEY_LEN (TG_TICKET_KEY_NAME_LEN + 2 * TG_TICKET_KEY_SECRET_LEN)
// The key file is small: TG_TICKET_KEYS_MAX lines of base64 and some comments.
#define TG_TICKET_KEYS_FILE_MAX 65536

// tg_ticket_key is one key as it appears in a ticket (name) and encrypts it (hmac, aes).
struct tg_ticket_key {
    uint8_t name[TG_TICKET_KEY_NAME_LEN];
    uint8_t hmac_key[TG_TICKET_KEY_SECRET_LEN];
    uint8_t aes_key[TG_TICKET_KEY_SECRET_LEN];
};

// tg_ticket_keys is the key set of one generation; keys[num_keys - 1] is the newest.
// Zero it with tg_ticket_keys_cleanse when done.
struct tg_ticket_keys {
    struct tg_ticket_key keys[TG_TICKET_KEYS_MAX];
    size_t num_keys;
};

// tg_ticket_keys_parse reads the key file text |data| (|data_len| bytes, naming it |name| in
// messages) into |out|. No I/O. Returns 1 on success; on failure 0 with `NAME:LINE: what is
// wrong` in |err| (LINE 0 for the whole file: no key at all) and |out| cleansed.
int tg_ticket_keys_parse(struct tg_ticket_keys *out, const char *name, const char *data,
                         size_t data_len, char *err, size_t err_len);

// tg_ticket_keys_load reads the key file at |path| into |out|: a regular file that group and
// others cannot access (mode 0600 or stricter), parsed by tg_ticket_keys_parse. Returns 1 on
// success; on failure 0 with `PATH:LINE: what is wrong` in |err| (LINE 0 for the file as a
// whole: missing, unreadable, its mode, too large).
int tg_ticket_keys_load(struct tg_ticket_keys *out, const char *path, char *err, size_t err_len);

// tg_ticket_keys_find returns the index in |keys| of the key named |name|
// (TG_TICKET_KEY_NAME_LEN bytes), or -1 when none is.
int tg_ticket_keys_find(const struct tg_ticket_keys *keys, const uint8_t *name);

// tg_ticket_keys_generate fills |out| with |num_keys| (1..TG_TICKET_KEYS_MAX) random keys.
// Returns 1 on success.
int tg_ticket_keys_generate(struct tg_ticket_keys *out, size_t num_keys);

// tg_ticket_keys_format writes the key file text of |keys| into |out| (|out_len| bytes, NUL
// included) and its length to |*out_text_len|. Returns 1 on success, 0 when |out| is too small.
int tg_ticket_keys_format(char *out, size_t out_len, size_t *out_text_len,
                          const struct tg_ticket_keys *keys);

// tg_ticket_keys_cleanse zeroes |keys| (OPENSSL_cleanse).
void tg_ticket_keys_cleanse(struct tg_ticket_keys *keys);

// tg_ticket_keys_main runs `tlsgate ticket-keys --out PATH [--keys N] [--force]` with the
// arguments after the command: writes a new key file of N (default 3) random keys with mode
// 0600, refusing to replace an existing file without --force. Messages go to |out| and
// |errf|. Returns the exit code: 0 written, 1 not written (I/O), 2 usage.
int tg_ticket_keys_main(int argc, char **argv, FILE *out, FILE *errf);

#endif // TLSGATE_TICKETKEYS_H
