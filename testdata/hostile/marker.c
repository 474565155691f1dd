/* Creates the file MARKER_PATH (set when it is compiled) whenever it runs: proof that a command that must
   not execute the binary (--no-verify) did not. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    int fd = open(MARKER_PATH, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { write(fd, "ran\n", 4); close(fd); }
    printf("hostile-marker 1.0\n");
    return 0;
}
