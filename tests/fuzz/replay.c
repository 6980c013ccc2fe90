/* Runs a fuzz target over saved inputs without libFuzzer, so `make check`
 * replays the corpus under ASan/UBSan with gcc. Prints one TAP line per
 * input; a crash is caught by the sanitizers and fails the test. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_inputs(const char *dir_path, char ***names)
{
    DIR *dir = opendir(dir_path);
    struct dirent *entry;
    int count = 0;

    if (!dir)
        return -1;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        *names = realloc(*names, sizeof(char *) * (size_t)(count + 1));
        (*names)[count++] = strdup(entry->d_name);
    }
    closedir(dir);
    return count;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    struct stat st;
    uint8_t *data;

    if (!file || fstat(fileno(file), &st) < 0)
        return -1;
    data = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (fread(data, 1, (size_t)st.st_size, file) != (size_t)st.st_size) {
        fclose(file);
        free(data);
        return -1;
    }
    fclose(file);
    LLVMFuzzerTestOneInput(data, (size_t)st.st_size);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    char **names = NULL, path[4096];
    int count, failed = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    count = count_inputs(argv[1], &names);
    if (count <= 0) {
        printf("1..0 # SKIP no inputs in %s\n", argv[1]);
        return count < 0;
    }
    qsort(names, (size_t)count, sizeof(char *), compare_names);
    printf("1..%d\n", count);
    for (int i = 0; i < count; i++) {
        snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]);
        fflush(stdout);
        int rc = replay_file(path);
        printf("%s %d - %s\n", rc == 0 ? "ok" : "not ok", i + 1, names[i]);
        failed += rc != 0;
        free(names[i]);
    }
    free(names);
    return failed != 0;
}
