/* A double-forking daemon: the child calls setsid() and forks again, and the grandchild writes the file
   named by argv[2] a second later. Nothing it starts may outlive the verification run. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    printf("hostile-daemon 1.0\n");
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        setsid();
        if (fork() == 0) {
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0); dup2(null, 1); dup2(null, 2);  /* a proper daemon holds no output */
            sleep(1);
            if (argc > 2) close(open(argv[2], O_WRONLY | O_CREAT, 0644));
            sleep(3600);
            _exit(0);
        }
        _exit(0);
    }
    return 0;
}
