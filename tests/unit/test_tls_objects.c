/* The objects behind tls-creds and tls-authz: --object text and object-add
 * JSON read as QEMU's (",," is a comma), every mistake refused with a
 * sentence when the object is made, and keys.psk read line by line. The
 * certificate files are the integration tests' (tests/vm/test_tls.py):
 * they need certtool. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <godwit/objects.h>

static struct objects *objects;

static int setup(void **state)
{
    (void)state;
    objects = objects_new();
    return objects ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    objects_free(objects);
    return 0;
}

static void assert_refused(const char *text, int code, const char *phrase)
{
    struct gw_error err = { 0 };

    assert_int_equal(objects_add_option(objects, text, &err), code);
    if (!strstr(err.msg, phrase))
        fail_msg("'%s': '%s' lacks '%s'", text, err.msg, phrase);
}

static void test_authz_identity_keeps_doubled_commas(void **state)
{
    struct gw_error err = { 0 };
    char identity[256];

    (void)state;
    assert_int_equal(objects_add_option(objects, "authz-simple,id=auth0,"
                                        "identity=O=godwit,,CN=client", &err), 0);
    assert_int_equal(objects_authz_identity(objects, "auth0", identity, sizeof(identity), &err),
                     0);
    assert_string_equal(identity, "O=godwit,CN=client");
    assert_int_equal(objects_tls_creds(objects, "auth0", &(struct tls_creds *){ NULL }, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "not TLS credentials"));
    assert_int_equal(objects_del(objects, "auth0", &err), 0);
    assert_int_equal(objects_authz_identity(objects, "auth0", identity, sizeof(identity), &err),
                     -ENOENT);
}

static void test_bad_text_is_refused(void **state)
{
    (void)state;
    assert_refused("authz-simple", -EINVAL, "not TYPE,id=ID");
    assert_refused("authz-simple,id=a,identity", -EINVAL, "'identity' is not KEY=VALUE");
    assert_refused("authz-simple,id=a,identity=x,identity=y", -EINVAL, "given twice");
    assert_refused("authz-simple,id=a,who=x", -EINVAL, "has no property 'who'");
    assert_refused("authz-simple,id=a", -EINVAL, "identity is missing");
    assert_refused("authz-simple,identity=x", -EINVAL, "id is missing");
    assert_refused("authz-simple,id=9a,identity=x", -EINVAL, "must start with a letter");
    assert_refused("secret,id=a,data=x", -EINVAL, "not one godwit makes");
    assert_refused("tls-creds-x509,id=a,dir=/nonexistent", -ENOENT, "cannot use dir");
    assert_refused("tls-creds-x509,id=a", -EINVAL, "dir is missing");
    assert_refused("tls-creds-x509,id=a,dir=/,endpoint=both", -EINVAL,
                   "endpoint is 'server' or 'client'");
    assert_refused("tls-creds-x509,id=a,dir=/,verify-peer=maybe", -EINVAL, "on or off");
}

static void test_duplicate_ids_are_refused(void **state)
{
    struct gw_error err = { 0 };

    (void)state;
    assert_int_equal(objects_add_option(objects, "authz-simple,id=dup,identity=x", &err), 0);
    assert_refused("authz-simple,id=dup,identity=y", -EEXIST, "exists already");
    assert_int_equal(objects_del(objects, "dup", &err), 0);
    assert_int_equal(objects_del(objects, "dup", &err), -ENOENT);
    assert_string_equal(err.msg, "object 'dup' not found");
}

/* A directory holding keys.psk with text; returns its path (static). */
static const char *psk_dir(const char *text)
{
    static char dir[64];
    char path[128];
    FILE *file;

    strcpy(dir, "/tmp/godwit-unit-psk-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    file = fopen(path, "w");
    assert_non_null(file);
    fputs(text, file);
    fclose(file);
    return dir;
}

static void remove_psk_dir(const char *dir)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    unlink(path);
    rmdir(dir);
}

static void test_psk_keys(void **state)
{
    struct gw_error err = { 0 };
    struct tls_creds *creds = NULL;
    char text[256];
    const char *dir = psk_dir("other:00ff\ngodwit:0123456789abcdef\n");

    (void)state;
    snprintf(text, sizeof(text), "tls-creds-psk,id=client,dir=%s,username=godwit", dir);
    assert_int_equal(objects_add_option(objects, text, &err), 0);
    snprintf(text, sizeof(text), "tls-creds-psk,id=server,dir=%s,endpoint=server", dir);
    assert_int_equal(objects_add_option(objects, text, &err), 0);
    assert_int_equal(objects_tls_creds(objects, "client", &creds, &err), 0);
    assert_int_equal(tls_creds_endpoint(creds), TLS_ENDPOINT_CLIENT);
    assert_int_equal(objects_del(objects, "client", &err), 0);
    assert_string_equal(tls_creds_id(creds), "client");   /* our reference keeps it */
    tls_creds_unref(creds);
    snprintf(text, sizeof(text), "tls-creds-psk,id=c2,dir=%s", dir);
    assert_refused(text, -ENOENT, "no key for username 'qemu'");   /* QEMU's default name */
    remove_psk_dir(dir);

    dir = psk_dir("godwit:0123\nbroken\n");
    snprintf(text, sizeof(text), "tls-creds-psk,id=c3,dir=%s,endpoint=server", dir);
    assert_refused(text, -EINVAL, "line 2");
    remove_psk_dir(dir);
    dir = psk_dir("godwit:abc\n");
    snprintf(text, sizeof(text), "tls-creds-psk,id=c4,dir=%s,username=godwit", dir);
    assert_refused(text, -EINVAL, "an even number of hex digits");
    remove_psk_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_authz_identity_keeps_doubled_commas, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_text_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_ids_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psk_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
