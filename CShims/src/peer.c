/* Files opened with the access rights of a control client (`reload FILE`
 * from a socket client that is not root): this thread's filesystem ids and
 * supplementary groups become the client's, and its effective capabilities
 * none, for one open(2); then the gateway's again. Raw system calls throughout: the kernel keeps these per
 * thread, and glibc's wrappers for setgroups would change every thread's. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "sluice_shims.h"

enum { SL_MAX_GROUPS = 65536 };

static int sl_caps_get(struct __user_cap_data_struct caps[2]) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capget, &header, caps);
}

static int sl_caps_set(const struct __user_cap_data_struct caps[2]) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capset, &header, caps);
}

int sl_open_as(const char *path, uint32_t uid, uint32_t gid, const uint32_t *groups, uint32_t ngroups) {
    const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    if ((uid_t)uid == geteuid()) {
        int fd = open(path, flags);
        return fd >= 0 ? fd : -errno;
    }
    if (ngroups > SL_MAX_GROUPS) return -E2BIG;
    gid_t *peer = calloc(ngroups + 1, sizeof(gid_t));
    gid_t *saved = calloc(SL_MAX_GROUPS, sizeof(gid_t));
    int result = -ENOMEM;
    if (!peer || !saved) goto out;
    for (uint32_t i = 0; i < ngroups; i++) peer[i] = (gid_t)groups[i];
    struct __user_cap_data_struct caps[2], none[2];
    int nsaved = getgroups(SL_MAX_GROUPS, saved);
    if (nsaved < 0 || sl_caps_get(caps) != 0) { result = -errno; goto out; }
    uid_t fsuid = geteuid();
    gid_t fsgid = getegid();
    if (syscall(SYS_setgroups, (size_t)ngroups, peer) != 0) { result = -errno; goto out; }
    syscall(SYS_setfsgid, (gid_t)gid);
    syscall(SYS_setfsuid, (uid_t)uid);
    /* No capability either (CAP_SYS_PTRACE would open another process's
     * /proc files, CAP_DAC_* any file): the open is checked as the client's own. */
    memcpy(none, caps, sizeof(none));
    none[0].effective = none[1].effective = 0;
    /* setfsuid reports no error: an invalid id (-1) changes nothing and returns the current one. */
    if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != (uid_t)uid || (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != (gid_t)gid
        || sl_caps_set(none) != 0) {
        result = -EPERM;
    } else {
        int fd = open(path, flags);
        result = fd >= 0 ? fd : -errno;
    }
    /* Going on with a client's rights would be worse than stopping. */
    struct __user_cap_data_struct now[2];
    if (sl_caps_set(caps) != 0) abort();
    syscall(SYS_setfsuid, fsuid);
    syscall(SYS_setfsgid, fsgid);
    if (syscall(SYS_setgroups, (size_t)nsaved, saved) != 0
        || (uid_t)syscall(SYS_setfsuid, (uid_t)-1) != fsuid || (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != fsgid
        || sl_caps_get(now) != 0 || memcmp(now, caps, sizeof(now)) != 0)
        abort();
out:
    free(peer);
    free(saved);
    return result;
}

int sl_is_kernel_filesystem(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) return 0;
    switch ((unsigned long)fs.f_type) {
    case PROC_SUPER_MAGIC: case SYSFS_MAGIC: case DEBUGFS_MAGIC: case SECURITYFS_MAGIC: case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC: case TRACEFS_MAGIC: case BPF_FS_MAGIC: case DEVPTS_SUPER_MAGIC:
        return 1;
    default:
        return 0;
    }
}

int sl_peer_credentials(int fd, uint32_t *uid, uint32_t *gid, int32_t *pid, uint32_t *groups, uint32_t *ngroups) {
    struct ucred c;
    socklen_t len = sizeof(c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return -errno;
    *uid = c.uid;
    *gid = c.gid;
    *pid = c.pid;
    /* Its supplementary groups as they were at connect (SO_PEERGROUPS,
     * Linux 4.13); where the kernel cannot say, none: fewer rights, never more. */
    socklen_t glen = (socklen_t)(*ngroups * sizeof(gid_t));
    gid_t *g = calloc(*ngroups ? *ngroups : 1, sizeof(gid_t));
    if (g && getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &glen) == 0) {
        *ngroups = (uint32_t)(glen / sizeof(gid_t));
        for (uint32_t i = 0; i < *ngroups; i++) groups[i] = (uint32_t)g[i];
    } else {
        *ngroups = 0;
    }
    free(g);
    return 0;
}
