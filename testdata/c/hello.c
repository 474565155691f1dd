/* hello: a small program with observable behaviour, built many ways (PIE, non-PIE, static, static-pie,
 * musl, i386, with an overlay) so binslim's tests can compare a binary's behaviour before and after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELLO_VERSION "1.0.0"

struct option_help {
    const char *flag;
    const char *meaning;
};

static const struct option_help options[] = {
    {"--version", "print the version and exit 0"},
    {"--exit N", "print a note on stderr and exit with status N"},
    {"ARG...", "echo each argument"},
};

static void usage(FILE *stream) {
    fputs("usage: hello [--version | --exit N | ARG...]\n", stream);
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        fprintf(stream, "  %-10s %s\n", options[i].flag, options[i].meaning);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("hello-c %s\n", HELLO_VERSION);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--exit") == 0) {
        if (argc < 3) {
            usage(stderr);
            return 2;
        }
        int code = atoi(argv[2]);
        fprintf(stderr, "exiting with %d\n", code);
        return code;
    }
    puts("hello from c");
    for (int i = 1; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    return 0;
}
