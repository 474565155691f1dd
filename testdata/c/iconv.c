/* Converts UTF-8 to ISO-8859-15: glibc dlopens the gconv module for that charset at run time (only UTF-8,
 * ASCII, UCS-2/4 and UTF-16/32 are built in). */
#include <iconv.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    iconv_t cd = iconv_open("ISO-8859-15", "UTF-8");
    if (cd == (iconv_t)-1) {
        perror("iconv_open(ISO-8859-15)");
        return 1;
    }
    char in[] = "\xe2\x82\xac 5";  /* the euro sign, 0xa4 in ISO-8859-15 */
    char out[16] = {0};
    char *inp = in, *outp = out;
    size_t inleft = strlen(in), outleft = sizeof out - 1;
    if (iconv(cd, &inp, &inleft, &outp, &outleft) == (size_t)-1) {
        perror("iconv");
        return 1;
    }
    printf("%02x %zu bytes\n", (unsigned char)out[0], strlen(out));
    iconv_close(cd);
    return 0;
}
