#include "sandbox/sb_policy.h"

#include <errno.h>
#include <stddef.h>

#include "sandbox/sb_groups.h"

#define COMMON_GROUPS "@exit", "@thread-self", "@basic-io", "@wake", "@time", "@self-info", "@signal-mask", \
		      "@self-signal", "@memory-release", "@futex", "@fstat"

/* Which groups make up each role: see the process table in doc/architecture.md. */
static const char *const scanner_groups[] = { COMMON_GROUPS, "@file-io", NULL };
static const char *const worker_groups[] = { COMMON_GROUPS, "@guest-read", NULL };
static const char *const writer_groups[] = { COMMON_GROUPS, "@file-io", "@aio", "@net-io", NULL };
static const char *const restore_groups[] = { COMMON_GROUPS, "@file-io", "@aio", NULL };
static const char *const receive_groups[] = { COMMON_GROUPS, "@file-io", "@net-io", NULL };
static const char *const inflater_groups[] = { COMMON_GROUPS, "@dest-file", NULL };

static const struct {
	const char *name;
	const char *const *groups;
} roles[_SB_ROLE_MAX] = {
	[SB_ROLE_SCANNER] = { "scanner", scanner_groups },
	[SB_ROLE_WORKER] = { "worker", worker_groups },
	[SB_ROLE_WRITER] = { "writer", writer_groups },
	[SB_ROLE_RESTORE] = { "restore", restore_groups },
	[SB_ROLE_RECEIVE] = { "receive", receive_groups },
	[SB_ROLE_INFLATER] = { "inflater", inflater_groups },
};

const char *sb_role_name(enum sb_role role)
{
	return (unsigned)role < _SB_ROLE_MAX ? roles[role].name : "unknown";
}

const char *const *sb_role_groups(enum sb_role role)
{
	return (unsigned)role < _SB_ROLE_MAX ? roles[role].groups : NULL;
}

static int add_group(scmp_filter_ctx ctx, const char *name, int32_t self_pid)
{
	const struct sb_group *g = sb_group_find(name);
	return g ? g->add(ctx, self_pid) : -ENOENT;
}

scmp_filter_ctx sb_policy_build(enum sb_role role, enum sb_mode mode, int32_t self_pid)
{
	if ((unsigned)role >= _SB_ROLE_MAX) {
		errno = EINVAL;
		return NULL;
	}
	/* KILL_PROCESS, not KILL_THREAD: a half-killed process could hold a
	 * ring in a state its peer waits on forever. */
	uint32_t deny = mode == SB_MODE_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
	scmp_filter_ctx ctx = seccomp_init(deny);
	if (!ctx) {
		errno = ENOMEM;
		return NULL;
	}
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* Threads started before lock-down (the restore readers) get the same
	 * filter; the kernel also gives them no_new_privs. */
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	for (const char *const *g = roles[role].groups; rc == 0 && *g; g++)
		rc = add_group(ctx, *g, self_pid);
#ifdef PF_SANITIZER_BUILD
	if (rc == 0)
		rc = add_group(ctx, "@sanitizer-runtime", self_pid);
#endif
	if (rc < 0) {
		seccomp_release(ctx);
		errno = -rc;
		return NULL;
	}
	return ctx;
}
