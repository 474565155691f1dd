/* Ignores its arguments and sleeps forever: every run of it times out. */
#include <unistd.h>

int main(void) {
    for (;;) pause();
}
