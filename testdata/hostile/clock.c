/* Prints the time and a random number: its output differs from run to run, so the original itself is not
   deterministic and nothing can be compared with these arguments. */
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

int main(void) {
    struct timespec now;
    unsigned int random_value = 0;
    clock_gettime(CLOCK_REALTIME, &now);
    getrandom(&random_value, sizeof random_value, 0);
    printf("hostile-clock 1.0 at %lld.%09ld, random %u\n", (long long)now.tv_sec, now.tv_nsec, random_value);
    return 0;
}
