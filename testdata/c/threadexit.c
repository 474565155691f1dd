/* A worker thread ends through pthread_exit: glibc (2.34 and later) unwinds the thread's stack with
 * libgcc_s, which it dlopens at that moment and aborts without ("libgcc_s.so.1 must be installed for
 * pthread_exit to work"). The program itself does not link libgcc_s, so ldd's (and lddtree's) list lacks it. */
#include <pthread.h>
#include <stdio.h>

static void *worker(void *arg) {
    int *counted = arg;
    for (int i = 1; i <= 10; i++) {
        *counted += i;
    }
    pthread_exit(counted);
    return NULL; /* not reached */
}

int main(void) {
    int counted = 0;
    pthread_t thread;
    void *returned = NULL;
    if (pthread_create(&thread, NULL, worker, &counted) != 0 || pthread_join(thread, &returned) != 0) {
        fputs("threadexit: cannot run the worker thread\n", stderr);
        return 1;
    }
    printf("worker ended through pthread_exit: sum %d, result %s\n", counted,
           returned == &counted ? "returned" : "lost");
    return 0;
}
