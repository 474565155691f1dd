/* greet: built as libgreet.so (loaded by usegreet) and as the relocatable object greet-obj.o (linked with
 * usegreet.c). A constructor and a thread-local give it .init_array and PT_TLS, which a stripper must keep. */
#include <stdio.h>

#include "greet.h"

static __thread int calls_on_thread;
static char message[160];
static int initialised;

__attribute__((constructor)) static void greet_init(void) {
    initialised = 1;
}

const char *greet(const char *name) {
    calls_on_thread++;
    snprintf(message, sizeof message, "%s, %s! (call %d)", initialised ? "Hello" : "Uninitialised", name,
             calls_on_thread);
    return message;
}

int greet_calls(void) {
    return calls_on_thread;
}
