/* Prints the size of its own file: stripping changes what it prints, which verification must catch. */
#include <stdio.h>
#include <sys/stat.h>

int main(void) {
    struct stat info;
    if (stat("/proc/self/exe", &info) != 0) return 1;
    printf("hostile-selfsize 1.0\nsize %lld\n", (long long)info.st_size);
    return 0;
}
