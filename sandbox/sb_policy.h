/* Seccomp allowlists: named syscall groups composed into one policy per role.
 * Library code: returns -errno, never logs. */
#ifndef PF_SB_POLICY_H
#define PF_SB_POLICY_H

#include <seccomp.h>
#include <stdint.h>

enum sb_role {
	SB_ROLE_SCANNER,
	SB_ROLE_WORKER,
	SB_ROLE_WRITER,
	SB_ROLE_RESTORE,	/* restore and check: snapshot reads by AIO, no sockets */
	SB_ROLE_RECEIVE,	/* a migration's destination: sockets, no AIO */
	SB_ROLE_INFLATER,	/* decompresses into a mapping: no files, no sockets */
	_SB_ROLE_MAX
};

enum sb_mode {
	SB_MODE_KILL,	/* production: a forbidden call kills the whole process (SIGSYS) */
	SB_MODE_LOG,	/* debug: the call is allowed and logged by the kernel (audit) */
};

const char *sb_role_name(enum sb_role role);

/* Names of the groups a role is made of, NULL-terminated (for docs/tests). */
const char *const *sb_role_groups(enum sb_role role);

/* A ready-to-load filter for a role.  `self_pid` lets tgkill target only this
 * process (abort() needs it).  Returns NULL with errno set on failure. */
scmp_filter_ctx sb_policy_build(enum sb_role role, enum sb_mode mode, int32_t self_pid);

#endif
