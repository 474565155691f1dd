/* Fails only in some runs: once stripped (its symbol table gone), every run from the third on exits 1;
   with --always, stripped or not. Runs are counted in a file in the current folder, which verification
   keeps per side. The first comparison passes; only checking every later run catches it. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int hostile_flaky_marker_symbol(int x) { return x + 1; }

static int has_symbol_table(void) {
    char needle[64];
    strcpy(needle, "hostile_flaky_marker_");
    strcat(needle, "symbol");  /* assembled at run time, so only the symbol table holds it whole */
    FILE *self = fopen("/proc/self/exe", "rb");
    if (!self) return -1;
    static char data[1 << 22];
    size_t size = fread(data, 1, sizeof data, self);
    fclose(self);
    size_t length = strlen(needle);
    for (size_t i = 0; i + length <= size; i++)
        if (!memcmp(data + i, needle, length)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    int always = argc > 1 && strcmp(argv[1], "--always") == 0;
    int runs = 0;
    FILE *counter = fopen("runs", "r");
    if (counter) { if (fscanf(counter, "%d", &runs) != 1) runs = 0; fclose(counter); }
    runs = hostile_flaky_marker_symbol(runs);
    counter = fopen("runs", "w");
    if (counter) { fprintf(counter, "%d\n", runs); fclose(counter); }
    if (runs >= 3 && (always || !has_symbol_table())) {
        printf("hostile-flaky: failed on run %d\n", runs);
        return 1;
    }
    printf("hostile-flaky 1.0\n");
    return 0;
}
