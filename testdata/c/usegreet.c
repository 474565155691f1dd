/* usegreet: the program that exercises greet(), either from libgreet.so or linked with greet-obj.o. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "greet.h"

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("usegreet 1.0.0\n%s\n", greet("version"));
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "--exit") == 0) {
        int code = atoi(argv[2]);
        fprintf(stderr, "exiting with %d\n", code);
        return code;
    }
    if (argc == 1)
        puts(greet("world"));
    for (int i = 1; i < argc; i++)
        puts(greet(argv[i]));
    printf("%d greetings\n", greet_calls());
    return 0;
}
