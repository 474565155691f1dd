/* Prints its version and exits 0, leaving a child in a new session that holds stdout and stderr open
   and sleeps for an hour. A run must end when this program exits, not when the output closes. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("hostile-holder 1.0\n");
    fflush(stdout);
    if (fork() == 0) {
        setsid();
        sleep(3600);
        _exit(0);
    }
    return 0;
}
