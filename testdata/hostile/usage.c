/* Knows no --version: prints its usage on stderr and exits 2, so verification with the default arguments
   only exercises the argument-error path. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("hostile-usage: does nothing useful\n");
        return 0;
    }
    fprintf(stderr, "usage: hostile-usage [--help]\n");
    return 2;
}
