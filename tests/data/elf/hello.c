/* A small program compiled for several targets by the ELF-check tests. */
#include <stdio.h>

int main(void) {
    puts("hello");
    return 0;
}
