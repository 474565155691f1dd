#ifndef GREET_H
#define GREET_H

/* Returns a greeting in a buffer owned by the library; valid until the next call. */
const char *greet(const char *name);

/* How many times greet() ran on the calling thread. */
int greet_calls(void);

#endif
