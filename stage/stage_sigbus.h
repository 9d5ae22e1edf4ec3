/* Faults on a file mapping, in the user's terms.
 *
 * A shared mapping of a file faults when its page cannot exist: the source's
 * guest file shrank under the mapping (reading past its new end), or the
 * destination's filesystem has no space for a page the stage writes (tmpfs,
 * hugetlbfs: a hole is allocated at the first write).  A load or store then
 * raises SIGBUS; a system call given such an address (recvmsg, sendmsg,
 * O_DIRECT I/O) fails with EFAULT instead.  Both end the stage with the same
 * one line naming the file, unless the thread that faulted said where to
 * resume (stage_fault_guard): a receiver that must tell the sender why
 * before it ends, or a store that can fail like a write(2) would.
 *
 * Register before lock-down: it reads the file's name from /proc and
 * installs the handler (rt_sigaction and readlink are not in any sandbox).
 * The handler itself only calls write(2) and _exit(2). */
#ifndef PF_STAGE_SIGBUS_H
#define PF_STAGE_SIGBUS_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

enum stage_mapping {
	STAGE_MAP_GUEST,	/* the source's guest RAM, read-only */
	STAGE_MAP_DEST,		/* the destination RAM file, written */
	_STAGE_MAP_MAX
};

/* [base, base + size) maps the file on fd.  A fault inside it ends the
 * process with the message of its kind; one elsewhere is left to kill the
 * process by SIGBUS as before. */
void stage_sigbus_watch(enum stage_mapping kind, const void *base, uint64_t size, int fd);

/* That message for the file on fd (of `size` bytes), for a write(2) that
 * failed the same way (ENOSPC).  Reads /proc: before lock-down. */
void stage_fault_describe(enum stage_mapping kind, int fd, uint64_t size, char *out, size_t len);

/* The message for a fault on a mapping of this kind (without the stage's
 * name), or NULL when none is registered: for a system call that returned
 * EFAULT on it. */
const char *stage_fault_reason(enum stage_mapping kind);

/* Die with that message when a mapping of this kind is registered and
 * neg_errno is -EFAULT; otherwise return. */
void stage_die_if_fault(enum stage_mapping kind, int neg_errno);

/* A store into the destination mapping that may fault, run so that a
 * fault returns instead of ending the process:
 *
 *	sigjmp_buf env;
 *	if (sigsetjmp(env, 0))
 *		return stage_fault_recovered();	// -ENOSPC
 *	stage_fault_guard(&env);
 *	... stores into the mapping ...
 *	stage_fault_guard(NULL);
 *
 * For this thread only.  The mask is not saved (no system call on the way
 * in); stage_fault_recovered unblocks SIGBUS again.  Whatever the guarded
 * code was doing is abandoned half way: only for code whose caller fails
 * next, or that leaves nothing but the bytes it stored behind. */
void stage_fault_guard(sigjmp_buf *resume);
int stage_fault_recovered(void);

#endif
