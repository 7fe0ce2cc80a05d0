#!/bin/sh
# Isolation probe: runs inside the container (busybox sh) and prints one line per check,
# "ok <name>" or "FAIL <name>: <detail>". The test asserts there is no FAIL line.
# $1 is a unique name used for files the probe tries to create outside the container.
marker="$1"
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; }

# 1. /proc/1/root is pid 1's root: the container's own root, never the host's.
if echo escaped > "/proc/1/root/$marker" 2>/dev/null; then
    if [ -e "/$marker" ]; then ok proc1root-stays-inside; else fail proc1root-stays-inside "wrote somewhere else"; fi
else
    ok proc1root-denied
fi

# 2. mount(2) needs CAP_SYS_ADMIN, which is not in the bounding set.
mkdir -p /mnt-probe
if mount -t tmpfs none /mnt-probe 2>/dev/null; then fail mount-denied "tmpfs mounted"; else ok mount-denied; fi
if mount -t proc proc /mnt-probe 2>/dev/null; then fail mount-proc-denied "proc mounted"; else ok mount-proc-denied; fi

# 3. '..' from / stays in /.
cd /.. && [ "$(pwd)" = / ] && [ -e /../kiln-rootfs-marker ] && [ -e /../../../kiln-rootfs-marker ] \
    && ok dotdot-stays-in-root || fail dotdot-stays-in-root "$(pwd)"

# 4. /sys is read-only, and so are /proc/sys and /proc/sysrq-trigger.
if touch /sys/kiln-probe 2>/dev/null; then fail sys-readonly "created /sys/kiln-probe"; else ok sys-readonly; fi
grep -q ' /sys sysfs ro,' /proc/mounts && ok sys-mounted-ro || fail sys-mounted-ro "$(grep ' /sys ' /proc/mounts)"
if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then fail proc-sys-readonly "wrote drop_caches"; else ok proc-sys-readonly; fi
if echo h > /proc/sysrq-trigger 2>/dev/null; then fail sysrq-readonly "wrote sysrq-trigger"; else ok sysrq-readonly; fi

# 4b. Capabilities: docker's default set, no CAP_SYS_ADMIN (21), no CAP_SYS_PTRACE (19),
# no CAP_NET_ADMIN (12), in the effective and the bounding set.
for set in CapEff CapBnd; do
    v=$(grep "^$set:" /proc/self/status | cut -f2)
    for cap in 12 19 21; do
        [ $(( (0x$v >> cap) & 1 )) -eq 0 ] && ok "$set-no-cap-$cap" || fail "$set-no-cap-$cap" "$v"
    done
done

# 5. We are pid 1's child in our own pid namespace, and see only our processes.
[ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] && [ "$(cat /proc/1/comm 2>/dev/null)" != init ] \
    && ok own-pid-namespace || fail own-pid-namespace "pid 1 is $(cat /proc/1/comm)"
n=$(ls -d /proc/[0-9]* | wc -l)
[ "$n" -lt 10 ] && ok few-processes || fail few-processes "$n processes visible"

# 6. No host mount is visible: only the container's own mounts.
if grep -q ' /mnt-probe ' /proc/mounts; then fail no-mount-probe "mounted"; else ok no-mount-probe; fi
[ "$(grep -c . /proc/mounts)" -lt 40 ] && ok few-mounts || fail few-mounts "$(grep -c . /proc/mounts) mounts"

# 7. Device nodes.
for d in null zero full random urandom tty; do
    [ -c /dev/$d ] && ok dev-$d || fail dev-$d "missing"
done
echo probe > /dev/null && ok dev-null-writable || fail dev-null-writable "write failed"
[ -c /dev/pts/ptmx ] && ok dev-pts || fail dev-pts "no /dev/pts/ptmx"
[ -d /dev/shm ] && touch /dev/shm/x && ok dev-shm || fail dev-shm "not writable"

# 7b. No fd of the caller leaks in: 0, 1, 2 and the one ls opens for /proc/self/fd.
n=$(ls /proc/self/fd | wc -l)
[ "$n" -le 4 ] && ok no-leaked-fds || fail no-leaked-fds "$(ls -l /proc/self/fd)"

# 8. Hostname is the container's.
[ "$(hostname)" = kiln-probe ] && ok hostname || fail hostname "$(hostname)"
if hostname evil 2>/dev/null; then fail sethostname-denied "changed"; else ok sethostname-denied; fi
rm -rf /mnt-probe
echo done
