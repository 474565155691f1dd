/* demo: what `bash scripts/install.sh --demo` builds with -g and shrinks with binslim. */
#include <stdio.h>
#include <string.h>

struct planet {
    const char *name;
    double au;
};

static const struct planet planets[] = {
    {"Mercury", 0.39}, {"Venus", 0.72}, {"Earth", 1.00}, {"Mars", 1.52},
    {"Jupiter", 5.20}, {"Saturn", 9.54}, {"Uranus", 19.19}, {"Neptune", 30.07},
};

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("demo 1.0.0");
        return 0;
    }
    for (size_t i = 0; i < sizeof planets / sizeof planets[0]; i++)
        printf("%-8s %6.2f AU\n", planets[i].name, planets[i].au);
    return 0;
}
