// Unit tests of the session ticket key file (proxy/ticketkeys.c): parsing (good files, too
// many keys, bad base64, wrong length, repeated names, no key), loading (mode 0644 refused,
// missing file), and `tlsgate ticket-keys` (mode 0600, no overwrite without --force, usage).

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/base64.h>

#include "tlsgate/ticketkeys.h"

// key_line writes the base64 of |len| bytes of value |fill| (then a newline) at |out|.
static size_t key_line(char *out, uint8_t fill, size_t len) {
    uint8_t raw[128];
    memset(raw, fill, sizeof(raw));
    size_t n = EVP_EncodeBlock((uint8_t *)out, raw, len);
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}

static int parse(struct tg_ticket_keys *k, const char *text, char *err, size_t err_len) {
    err[0] = '\0';
    return tg_ticket_keys_parse(k, "keys.txt", text, strlen(text), err, err_len);
}

static void test_parse_good(void **state) {
    (void)state;
    char text[2048] = "# a comment\n\n";
    size_t n = strlen(text);
    n += key_line(text + n, 1, TG_TICKET_KEY_LEN);
    strcat(text, "   \r\n");
    n = strlen(text);
    n += key_line(text + n, 2, TG_TICKET_KEY_LEN);
    text[n - 1] = '\r'; // CRLF, and no final newline
    struct tg_ticket_keys k;
    char err[256];
    assert_int_equal(parse(&k, text, err, sizeof(err)), 1);
    assert_int_equal(k.num_keys, 2);
    assert_int_equal(k.keys[0].name[0], 1);
    assert_int_equal(k.keys[1].aes_key[31], 2); // the last line is the newest
    uint8_t name[TG_TICKET_KEY_NAME_LEN];
    memset(name, 2, sizeof(name));
    assert_int_equal(tg_ticket_keys_find(&k, name), 1);
    memset(name, 3, sizeof(name));
    assert_int_equal(tg_ticket_keys_find(&k, name), -1);
    tg_ticket_keys_cleanse(&k);
    assert_int_equal(k.num_keys, 0);
    assert_int_equal(k.keys[1].aes_key[31], 0);
}

static void test_parse_max_and_too_many(void **state) {
    (void)state;
    char text[4096] = "";
    size_t n = 0;
    for (int i = 0; i < TG_TICKET_KEYS_MAX; i++)
        n += key_line(text + n, (uint8_t)(i + 1), TG_TICKET_KEY_LEN);
    struct tg_ticket_keys k;
    char err[256];
    assert_int_equal(parse(&k, text, err, sizeof(err)), 1);
    assert_int_equal(k.num_keys, TG_TICKET_KEYS_MAX);
    n += key_line(text + n, 0x77, TG_TICKET_KEY_LEN);
    assert_int_equal(parse(&k, text, err, sizeof(err)), 0);
    assert_string_equal(err, "keys.txt:9: more than 8 keys");
    assert_int_equal(k.num_keys, 0);
}

static void test_parse_bad_base64(void **state) {
    (void)state;
    char text[1024] = "";
    size_t n = key_line(text, 1, TG_TICKET_KEY_LEN);
    n += key_line(text + n, 2, TG_TICKET_KEY_LEN);
    text[n - 10] = '!'; // line 2
    struct tg_ticket_keys k;
    char err[256];
    assert_int_equal(parse(&k, text, err, sizeof(err)), 0);
    assert_string_equal(err, "keys.txt:2: not valid base64");
    assert_int_equal(parse(&k, "abc\n", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "keys.txt:1: a key is the base64 of 80 bytes"));
}

static void test_parse_wrong_length(void **state) {
    (void)state;
    char text[1024] = "";
    key_line(text, 1, 48); // the 48-byte format of SSL_CTX_set_tlsext_ticket_keys
    struct tg_ticket_keys k;
    char err[256];
    assert_int_equal(parse(&k, text, err, sizeof(err)), 0);
    assert_string_equal(err, "keys.txt:1: a key is 80 bytes, this line decodes to 48");
    key_line(text, 1, 81);
    assert_int_equal(parse(&k, text, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "keys.txt:1: "));
}

static void test_parse_repeated_and_empty(void **state) {
    (void)state;
    char text[1024] = "";
    size_t n = key_line(text, 1, TG_TICKET_KEY_LEN);
    key_line(text + n, 1, TG_TICKET_KEY_LEN);
    struct tg_ticket_keys k;
    char err[256];
    assert_int_equal(parse(&k, text, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "keys.txt:2: the key name"));
    assert_int_equal(parse(&k, "# only a comment\n\n", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "keys.txt:0: no key"));
    assert_int_equal(parse(&k, "", err, sizeof(err)), 0);
}

static void temp_path(char *out, size_t out_len, const char *what) {
    const char *dir = getenv("TMPDIR");
    snprintf(out, out_len, "%s/tg-ticketkeys-%s-%ld", dir != NULL ? dir : "/tmp", what,
             (long)getpid());
    unlink(out);
}

static int run_main(int argc, const char **argv, char *errbuf, size_t errbuf_len) {
    FILE *out = tmpfile(), *errf = tmpfile();
    int rc = tg_ticket_keys_main(argc, (char **)argv, out, errf);
    rewind(errf);
    size_t n = fread(errbuf, 1, errbuf_len - 1, errf);
    errbuf[n] = '\0';
    fclose(out);
    fclose(errf);
    return rc;
}

static void test_command_and_load(void **state) {
    (void)state;
    char path[512], msg[1024];
    temp_path(path, sizeof(path), "cmd");
    const char *argv[] = {"--out", path, "--keys", "5"};
    assert_int_equal(run_main(4, argv, msg, sizeof(msg)), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    struct tg_ticket_keys k1, k2;
    char err[600];
    assert_int_equal(tg_ticket_keys_load(&k1, path, err, sizeof(err)), 1);
    assert_int_equal(k1.num_keys, 5);

    // No overwrite without --force; with it, new keys and still 0600.
    assert_int_equal(run_main(2, argv, msg, sizeof(msg)), 1);
    assert_non_null(strstr(msg, "--force"));
    const char *force[] = {"--out", path, "--force"};
    assert_int_equal(run_main(3, force, msg, sizeof(msg)), 0);
    assert_int_equal(tg_ticket_keys_load(&k2, path, err, sizeof(err)), 1);
    assert_int_equal(k2.num_keys, 3);
    assert_int_equal(tg_ticket_keys_find(&k2, k1.keys[0].name), -1);
    tg_ticket_keys_cleanse(&k1);
    tg_ticket_keys_cleanse(&k2);

    // A key file group or others may read is refused.
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(tg_ticket_keys_load(&k1, path, err, sizeof(err)), 0);
    char want[600];
    snprintf(want, sizeof(want), "%s:0: has mode 0644", path);
    assert_non_null(strstr(err, want));
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(tg_ticket_keys_load(&k1, path, err, sizeof(err)), 0);
    unlink(path);
    assert_int_equal(tg_ticket_keys_load(&k1, path, err, sizeof(err)), 0);
    assert_non_null(strstr(err, ":0: cannot open"));
}

static void test_command_usage(void **state) {
    (void)state;
    char msg[1024];
    const char *none[] = {"--keys", "3"};
    assert_int_equal(run_main(2, none, msg, sizeof(msg)), 2);
    assert_non_null(strstr(msg, "--out FILE is required"));
    const char *bad[] = {"--out", "/nonexistent/x", "--keys", "9"};
    assert_int_equal(run_main(4, bad, msg, sizeof(msg)), 2);
    const char *zero[] = {"--out", "/nonexistent/x", "--keys", "0"};
    assert_int_equal(run_main(4, zero, msg, sizeof(msg)), 2);
    const char *unknown[] = {"--bogus"};
    assert_int_equal(run_main(1, unknown, msg, sizeof(msg)), 2);
    const char *nodir[] = {"--out", "/nonexistent/dir/keys"};
    assert_int_equal(run_main(2, nodir, msg, sizeof(msg)), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_max_and_too_many),
        cmocka_unit_test(test_parse_bad_base64),
        cmocka_unit_test(test_parse_wrong_length),
        cmocka_unit_test(test_parse_repeated_and_empty),
        cmocka_unit_test(test_command_and_load),
        cmocka_unit_test(test_command_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
