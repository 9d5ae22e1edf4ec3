/* Locking a stage process down once it has set itself up.
 *
 * Order (design.md §2): everything allocated already (the caller's job:
 * zstd contexts, buffers, mappings), then rlimits, then PR_SET_NO_NEW_PRIVS,
 * then the role's seccomp filter.  Nothing after this may open, map
 * executable memory, create sockets or exec. */
#ifndef PF_SB_LOCKDOWN_H
#define PF_SB_LOCKDOWN_H

#include <stdbool.h>

#include "sandbox/sb_policy.h"

struct sb_options {
	enum sb_mode mode;
	int max_fd;		/* highest fd the process still needs */
	bool writes_files;	/* keep RLIMIT_FSIZE unlimited (writer, receiver) */
};

/* The mode stage binaries use: LOG in -Dsandbox_debug=true builds, else KILL. */
enum sb_mode sb_default_mode(void);

/* Returns 0, or -errno with *failed_step (may be NULL) naming the step that
 * failed ("setrlimit(RLIMIT_NOFILE)", "prctl(PR_SET_NO_NEW_PRIVS)", ...). */
int sb_lockdown(enum sb_role role, const struct sb_options *opt, const char **failed_step);

#endif
