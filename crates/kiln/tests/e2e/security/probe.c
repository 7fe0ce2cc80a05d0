/* The attacker's probe for security::syscalls: the kernel calls busybox cannot make.
 * Built with `gcc -static` by the test and copied into a busybox image.
 *
 *   probe key-add DESC PAYLOAD   add a "user" key to the user keyring @u
 *   probe key-read DESC          find DESC in @u and print its payload
 *   probe key-unlink DESC        remove DESC from @u (the test's cleanup on the host)
 *   probe tiocsti TEXT           type TEXT into the terminal on fd 0
 *   probe fsync-badfd            fsync an fd that is not open
 *
 * Exit codes: 0 the call worked, 11 the kernel refused it (the message names the errno),
 * 12 anything else. Every outcome is printed on one line starting with the command's name.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEY_SPEC_USER_KEYRING -4
#define KEYCTL_UNLINK 9
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOKEY: return "ENOKEY";
    case EBADF: return "EBADF";
    case ENOSYS: return "ENOSYS";
    case ENOTTY: return "ENOTTY";
    default: return strerror(e);
    }
}

static int refused(const char *what) {
    int e = errno;
    printf("%s: %s\n", what, errname(e));
    return e == EPERM || e == EACCES || e == ENOKEY || e == EBADF ? 11 : 12;
}

static long search(const char *desc) {
    return syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 4 && strcmp(argv[1], "key-add") == 0) {
        long id = syscall(SYS_add_key, "user", argv[2], argv[3], strlen(argv[3]),
                          KEY_SPEC_USER_KEYRING);
        if (id < 0)
            return refused("key-add");
        printf("key-add: added key %ld\n", id);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "key-read") == 0) {
        long id = search(argv[2]);
        if (id < 0)
            return refused("key-read");
        char buf[256];
        long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf - 1);
        if (n < 0)
            return refused("key-read");
        buf[n < (long)sizeof buf - 1 ? n : (long)sizeof buf - 1] = 0;
        printf("key-read: payload %s\n", buf);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "key-unlink") == 0) {
        long id = search(argv[2]);
        if (id < 0 || syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING) < 0)
            return refused("key-unlink");
        printf("key-unlink: removed\n");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "tiocsti") == 0) {
        for (const char *c = argv[2]; *c; c++) {
            if (ioctl(0, TIOCSTI, c) < 0)
                return refused("tiocsti");
        }
        printf("tiocsti: typed %zu bytes\n", strlen(argv[2]));
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "fsync-badfd") == 0) {
        /* A real fsync of a closed fd fails with EBADF; a no-op returns 0. */
        if (fsync(987) < 0)
            return refused("fsync-badfd");
        printf("fsync-badfd: returned 0\n");
        return 0;
    }
    fprintf(stderr, "probe: unknown command\n");
    return 12;
}
