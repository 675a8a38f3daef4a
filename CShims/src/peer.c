/* Files opened with the access rights of a control client (`reload FILE`
 * from a socket client that is not root): this thread's filesystem ids and
 * supplementary groups become the client's for one open(2), then the
 * gateway's again. Raw system calls throughout: the kernel keeps these per
 * thread, and glibc's wrappers for setgroups would change every thread's. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "sluice_shims.h"

enum { SL_MAX_GROUPS = 65536 };

int sl_open_as(const char *path, uint32_t uid, uint32_t gid) {
    const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    if ((uid_t)uid == geteuid()) {
        int fd = open(path, flags);
        return fd >= 0 ? fd : -errno;
    }
    /* The client's groups: its primary group and those the user database lists. */
    gid_t *groups = calloc(SL_MAX_GROUPS, sizeof(gid_t));
    gid_t *saved = calloc(SL_MAX_GROUPS, sizeof(gid_t));
    char *pwbuf = malloc(65536);
    int result = -ENOMEM;
    if (!groups || !saved || !pwbuf) goto out;
    int ngroups = 1;
    groups[0] = (gid_t)gid;
    struct passwd pw, *found = NULL;
    if (getpwuid_r((uid_t)uid, &pw, pwbuf, 65536, &found) == 0 && found) {
        int n = SL_MAX_GROUPS;
        if (getgrouplist(found->pw_name, (gid_t)gid, groups, &n) >= 0) ngroups = n;
        else { ngroups = 1; groups[0] = (gid_t)gid; }
    }
    int nsaved = getgroups(SL_MAX_GROUPS, saved);
    if (nsaved < 0) { result = -errno; goto out; }
    uid_t fsuid = geteuid();
    gid_t fsgid = getegid();
    if (syscall(SYS_setgroups, (size_t)ngroups, groups) != 0) { result = -errno; goto out; }
    syscall(SYS_setfsgid, (gid_t)gid);
    syscall(SYS_setfsuid, (uid_t)uid);
    /* setfsuid reports no error: an invalid id (-1) changes nothing and returns the current one. */
    if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != (uid_t)uid || (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != (gid_t)gid) {
        result = -EPERM;
    } else {
        int fd = open(path, flags);
        result = fd >= 0 ? fd : -errno;
    }
    syscall(SYS_setfsuid, fsuid);
    syscall(SYS_setfsgid, fsgid);
    /* Going on with a client's rights would be worse than stopping. */
    if (syscall(SYS_setgroups, (size_t)nsaved, saved) != 0
        || (uid_t)syscall(SYS_setfsuid, (uid_t)-1) != fsuid || (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != fsgid)
        abort();
out:
    free(groups);
    free(saved);
    free(pwbuf);
    return result;
}

int sl_peer_credentials(int fd, uint32_t *uid, uint32_t *gid, int32_t *pid) {
    struct ucred c;
    socklen_t len = sizeof(c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return -errno;
    *uid = c.uid;
    *gid = c.gid;
    *pid = c.pid;
    return 0;
}
