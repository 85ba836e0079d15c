/* A minimal /init for boot tests: proves the kernel ran userspace, then powers off. */
#include <stdio.h>
#include <sys/reboot.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(void) {
    struct utsname u;
    uname(&u);
    printf("embedbuild-test-init: running on %s %s\n", u.machine, u.release);
    fflush(stdout);
    sleep(1); /* let a console reader see the line before the machine goes away */
    reboot(RB_POWER_OFF);
    return 0;
}
