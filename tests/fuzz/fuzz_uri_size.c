/* Fuzzes the two parsers of user-typed text: migration URIs and sizes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/size.h>
#include <godwit/uri.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct gw_error err;
    struct uri uri;
    char formatted[PATH_MAX + 32];
    uint64_t bytes;

    memcpy(text, data, size);
    text[size] = '\0';
    if (uri_parse(text, &uri, &err) == 0)
        uri_format(&uri, formatted, sizeof(formatted));
    size_parse(text, 1, &bytes, &err);
    size_parse(text, 1ULL << 20, &bytes, &err);
    free(text);
    return 0;
}
