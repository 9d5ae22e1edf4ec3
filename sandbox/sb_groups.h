/* Internal to sandbox/: the syscall group table. */
#ifndef PF_SB_GROUPS_H
#define PF_SB_GROUPS_H

#include <seccomp.h>
#include <stdint.h>

struct sb_group {
	const char *name;
	const char *help;
	/* Adds the group's rules; -errno on failure. */
	int (*add)(scmp_filter_ctx ctx, int32_t self_pid);
};

/* NULL when no group has that name. */
const struct sb_group *sb_group_find(const char *name);

#endif
