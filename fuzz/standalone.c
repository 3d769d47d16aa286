/* Fallback driver for machines without clang's libFuzzer: a plain random mutator
 * around LLVMFuzzerTestOneInput, built with gcc -fsanitize=address,undefined.
 *
 *   ./fuzz_x [-max_total_time=S] [-seed=N] DIR_OR_FILE...
 *
 * Runs every seed file once, then for S seconds (default 20) mutates seeds
 * (bit flips, byte sets, inserts, deletes, duplications, splices of two seeds) and
 * runs the results. No coverage feedback: weaker than libFuzzer, but the same
 * sanitizers and the same invariants. Prints "#N DONE execs: N" at the end. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 4096
#define MAX_LEN 65536

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static int nseeds;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void add_file(const char *path)
{
    FILE *f;
    long n;
    if (nseeds >= MAX_SEEDS || (f = fopen(path, "rb")) == NULL)
        return;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n >= 0 && n <= MAX_LEN) {
        seeds[nseeds] = malloc((size_t)n + 1);
        seed_len[nseeds] = fread(seeds[nseeds], 1, (size_t)n, f);
        nseeds++;
    }
    fclose(f);
}

static void add_path(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char buf[4096];
    if (stat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    if ((d = opendir(path)) == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(buf, sizeof buf, "%s/%s", path, e->d_name);
        add_file(buf);
    }
    closedir(d);
}

static size_t mutate(uint8_t *buf, size_t len)
{
    int rounds = 1 + (int)(next() % 8), r;
    for (r = 0; r < rounds; r++) {
        size_t pos = len ? next() % len : 0, n;
        switch (next() % 7) {
        case 0: if (len) buf[pos] ^= (uint8_t)(1u << (next() % 8)); break;
        case 1: if (len) buf[pos] = (uint8_t)next(); break;
        case 2:  /* insert a byte */
            if (len < MAX_LEN) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = (uint8_t)"\0\n\r .=-_{}\"AQ/+%"[next() % 16];
                len++;
            }
            break;
        case 3:  /* delete a run */
            n = len ? 1 + next() % (len - pos) : 0;
            memmove(buf + pos, buf + pos + n, len - pos - n);
            len -= n;
            break;
        case 4:  /* duplicate a run */
            n = len ? 1 + next() % (len - pos) : 0;
            if (len + n <= MAX_LEN) {
                memmove(buf + pos + n, buf + pos, len - pos);
                len += n;
            }
            break;
        case 5:  /* splice another seed in */
            if (nseeds) {
                int s = (int)(next() % (uint64_t)nseeds);
                n = seed_len[s] ? next() % seed_len[s] : 0;
                if (pos + n <= MAX_LEN) {
                    memcpy(buf + pos, seeds[s], n);
                    if (pos + n > len)
                        len = pos + n;
                }
            }
            break;
        default: len = pos; break;  /* truncate */
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    double seconds = 20;
    unsigned long long execs = 0;
    uint8_t *buf = malloc(MAX_LEN + 1);
    struct timespec t0, t;
    int i;
    for (i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-max_total_time=", 16) == 0)
            seconds = atof(argv[i] + 16);
        else if (strncmp(argv[i], "-seed=", 6) == 0)
            rng = strtoull(argv[i] + 6, NULL, 10) | 1;
        else if (argv[i][0] != '-')
            add_path(argv[i]);
    }
    for (i = 0; i < nseeds; i++, execs++)
        LLVMFuzzerTestOneInput(seeds[i], seed_len[i]);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        size_t len = 0;
        if (nseeds) {
            int s = (int)(next() % (uint64_t)nseeds);
            memcpy(buf, seeds[s], seed_len[s]);
            len = seed_len[s];
        }
        len = mutate(buf, len);
        {
            /* exact-size copy: ASan sees reads past the input */
            uint8_t *in = malloc(len ? len : 1);
            memcpy(in, buf, len);
            LLVMFuzzerTestOneInput(in, len);
            free(in);
        }
        execs++;
        if ((execs & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
                break;
        }
    }
    printf("#%llu DONE execs: %llu (standalone random driver)\n", execs, execs);
    for (i = 0; i < nseeds; i++)
        free(seeds[i]);
    free(buf);
    return 0;
}
