/* Looks up root in the passwd database: glibc reads /etc/nsswitch.conf and /etc/passwd at run time, which
 * a root made from ldd's (or lddtree's) list of libraries lacks. */
#include <pwd.h>
#include <stdio.h>

int main(void) {
    struct passwd *pw = getpwnam("root");
    if (pw == NULL) {
        fputs("getpwnam(root): no such user\n", stderr);
        return 1;
    }
    printf("root: uid %u, home %s\n", (unsigned)pw->pw_uid, pw->pw_dir);
    return 0;
}
