#include "stage/stage_privs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "stage/stage.h"

/* glibc has no capget/capset wrappers; libcap would be a dependency for
 * four calls.  The sets are two 32-bit words each (version 3). */
struct caps {
	struct __user_cap_data_struct d[2];
};

static void caps_get(struct caps *c)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	if (syscall(SYS_capget, &h, c->d) < 0)
		stage_die_errno(-errno, "reading this stage's capabilities (capget)");
}

/* For the calling thread only: the kernel offers no call for all threads. */
static void caps_set(const struct caps *c, const char *what)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	if (syscall(SYS_capset, &h, c->d) < 0)
		stage_die_errno(-errno, "%s (capset)", what);
}

static bool has_cap(const struct caps *c, int cap)
{
	return c->d[cap / 32].effective & (1u << (cap % 32));
}

static bool caps_empty(const struct caps *c)
{
	for (int k = 0; k < 2; k++)
		if (c->d[k].effective || c->d[k].permitted || c->d[k].inheritable)
			return false;
	return true;
}

void stage_privs_begin(void)
{
	/* EINVAL: a kernel without ambient capabilities has none to clear. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		stage_die_errno(-errno, "clearing the ambient capabilities");
	struct caps c;
	caps_get(&c);
	/* Without CAP_SETPCAP (not root) the bounding set cannot shrink; it
	 * only limits what an exec could gain, which no-new-privs and the
	 * filter rule out anyway.  PR_CAPBSET_READ fails past the last
	 * capability this kernel knows. */
	for (int cap = 0; has_cap(&c, CAP_SETPCAP) && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			stage_die_errno(-errno, "dropping capability %d from the bounding set", cap);
	c.d[0].inheritable = c.d[1].inheritable = 0;
	/* Only leaving uid 0 takes capabilities from every thread at once
	 * (stage_privs_drop).  A stage of a user who is not root, but holds
	 * capabilities (ambient ones from a service manager, file ones), could
	 * take them only from the thread that calls capset; its files come as
	 * fds, so it needs none: it drops them now, before it starts a thread.
	 * (One cost: such a receive cannot listen on a port below 1024.) */
	uid_t r, e, s;
	if (getresuid(&r, &e, &s) < 0)
		stage_die_errno(-errno, "reading this stage's user");
	if (r != 0 && e != 0 && s != 0)
		memset(&c, 0, sizeof(c));
	caps_set(&c, "dropping capabilities");
}

/* UID:GID from the front end; neither may be root's. */
static void target_ids(uid_t *uid, gid_t *gid)
{
	const char *v = getenv(STAGE_RUN_AS_ENV);
	if (!v)
		stage_die(STAGE_EXIT_USAGE, "%s is not set (stages are started by pageferry)", STAGE_RUN_AS_ENV);
	char *end = NULL;
	errno = 0;
	unsigned long long u = strtoull(v, &end, 10), g = 0;
	bool ok = *v >= '0' && *v <= '9' && *end == ':' && errno == 0;
	if (ok) {
		const char *gs = end + 1;
		g = strtoull(gs, &end, 10);
		ok = *gs >= '0' && *gs <= '9' && *end == 0 && errno == 0;
	}
	/* (uid_t)-1 means "unchanged" to setresuid. */
	if (!ok || u >= UINT32_MAX || g >= UINT32_MAX)
		stage_die(STAGE_EXIT_USAGE, "%s='%s' is not UID:GID", STAGE_RUN_AS_ENV, v);
	if (u == 0 || g == 0)
		stage_die(STAGE_EXIT_USAGE, "%s='%s': a stage never runs as root", STAGE_RUN_AS_ENV, v);
	*uid = (uid_t)u;
	*gid = (gid_t)g;
}

/* MSG_ZEROCOPY pins the guest pages the writer sends until TCP is done with
 * them, and the kernel counts them against RLIMIT_MEMLOCK unless the sender
 * has CAP_IPC_LOCK.  The count is per user: every process of the user we
 * switch to shares it (concurrent migrations, any other `nobody`), so no
 * finite limit we set is ours alone.  Running as root the writer had
 * CAP_IPC_LOCK, i.e. no limit; it keeps that where it still may lift the
 * hard limit (CAP_SYS_RESOURCE).  Its filter allows no mlock, so the only
 * pins it can make are its sends, bounded by its sockets' send buffers.
 * Otherwise it takes the hard limit: past it a send fails with ENOBUFS and
 * the writer waits for a completion, or copies that send (writer/wr_net.c);
 * measured on loopback at 8 MiB: 27 of a 1 GiB migration's sends, no
 * failure.  sendfile, the default, pins nothing. */
static void allow_zerocopy_pins(const struct caps *c)
{
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };
	if (!has_cap(c, CAP_SYS_RESOURCE) && getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		stage_die_errno(-errno, "getrlimit(RLIMIT_MEMLOCK)");
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
		stage_die_errno(-errno, "setrlimit(RLIMIT_MEMLOCK) for zero-copy sends");
}

/* The value after "\nNAME:" in a /proc status text, or NULL. */
static const char *status_field(const char *text, const char *name)
{
	char key[32];
	snprintf(key, sizeof(key), "\n%s:", name);
	const char *p = strstr(text, key);
	return p ? p + strlen(key) : NULL;
}

/* Do all `n` numbers (base 10 or 16) after field `name` equal `want`? */
static bool status_all(const char *text, const char *name, int n, int base, unsigned long long want)
{
	const char *p = status_field(text, name);
	for (int k = 0; p && k < n; k++) {
		char *end;
		if (strtoull(p, &end, base) != want || end == p)
			return false;
		p = end;
	}
	return p != NULL;
}

/* One thread's credentials as the kernel reports them, or dies. */
static void check_thread(const char *tid, uid_t uid, gid_t gid, bool no_groups)
{
	char path[64], text[8192];
	snprintf(path, sizeof(path), "/proc/self/task/%s/status", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return; /* a thread that has just ended */
	if (fd < 0)
		stage_die_errno(-errno, "checking thread %s's privileges: %s", tid, path);
	size_t len = 0;
	ssize_t r;
	while (len < sizeof(text) - 1 && (r = read(fd, text + len, sizeof(text) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	text[len] = 0;
	const char *groups = status_field(text, "Groups");
	const char *wrong = !status_all(text, "Uid", 4, 10, uid) ? "its user"
			    : !status_all(text, "Gid", 4, 10, gid) ? "its group"
			    : no_groups && (!groups || groups[strspn(groups, " \t")] != '\n') ? "supplementary groups"
			    : !status_all(text, "CapInh", 1, 16, 0) || !status_all(text, "CapPrm", 1, 16, 0) ||
					!status_all(text, "CapEff", 1, 16, 0) || !status_all(text, "CapAmb", 1, 16, 0)
				? "capabilities"
				: NULL;
	/* Nothing should be left (stage_privs_begin ran before any thread
	 * started); if anything is, refuse rather than run half-privileged. */
	if (wrong)
		stage_die(STAGE_EXIT_FAILED, "thread %s kept %s after dropping privileges (wanted uid %u, gid %u, "
			  "no capabilities)", tid, wrong, (unsigned)uid, (unsigned)gid);
}

static void check_every_thread(uid_t uid, gid_t gid, bool no_groups)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		stage_die_errno(-errno, "listing this stage's threads (/proc/self/task)");
	struct dirent *e;
	while ((errno = 0, e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			check_thread(e->d_name, uid, gid, no_groups);
	int err = errno;
	closedir(d);
	if (err)
		stage_die_errno(-err, "listing this stage's threads (/proc/self/task)");
}

void stage_privs_drop(enum sb_role role)
{
	uid_t uid;
	gid_t gid;
	target_ids(&uid, &gid);
	struct caps c;
	caps_get(&c);
	if (role == SB_ROLE_WRITER)
		allow_zerocopy_pins(&c);
	/* setgroups, setresgid and setresuid reach every thread: glibc makes
	 * each of them do the call.  Leaving uid 0 for good clears each
	 * thread's permitted and effective sets (no SECBIT_KEEP_CAPS). */
	bool no_groups = has_cap(&c, CAP_SETGID);
	if (no_groups && setgroups(0, NULL) < 0)
		stage_die_errno(-errno, "dropping the supplementary groups");
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0)
		stage_die_errno(-errno, "reading this stage's user and group");
	if ((rg != gid || eg != gid || sg != gid) && setresgid(gid, gid, gid) < 0)
		stage_die_errno(-errno, "switching to group %u", (unsigned)gid);
	if ((ru != uid || eu != uid || su != uid) && setresuid(uid, uid, uid) < 0)
		stage_die_errno(-errno, "switching to user %u", (unsigned)uid);
	/* Leaving uid 0 (or stage_privs_begin, for a stage that is not root)
	 * emptied the sets already; this makes sure, on this thread. */
	struct caps none;
	memset(&none, 0, sizeof(none));
	caps_set(&none, "dropping every capability");

	caps_get(&c);
	if (!caps_empty(&c))
		stage_die(STAGE_EXIT_FAILED, "capabilities left after dropping them all");
	/* With no capability and no id 0 this must fail; if it does not,
	 * nothing above meant what it should. */
	if (syscall(SYS_setresuid, 0, 0, 0) == 0)
		stage_die(STAGE_EXIT_FAILED, "could become root again after dropping privileges");
	check_every_thread(uid, gid, no_groups);
}
