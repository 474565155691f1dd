/* hello-c-usdt: the hello contract (--version, --exit N, ARG...) with USDT probes (<sys/sdt.h>), so the
 * program carries a .note.stapsdt note that tracers (SystemTap, bpftrace, perf) read from the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sdt.h>

int main(int argc, char **argv) {
    DTRACE_PROBE1(hello, start, argc);
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("hello-c 1.0.0\n");
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "--exit") == 0) {
        int code = atoi(argv[2]);
        DTRACE_PROBE1(hello, exit, code);
        fprintf(stderr, "exiting with %d\n", code);
        return code;
    }
    puts("hello from c");
    for (int i = 1; i < argc; i++) {
        DTRACE_PROBE2(hello, argument, i, argv[i]);
        printf("argv[%d] = %s\n", i, argv[i]);
    }
    return 0;
}
