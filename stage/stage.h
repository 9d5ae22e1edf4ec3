/* What every pipeline stage does at start-up and on failure.
 *
 * Start-up, in this order: stage_set_name, stage_tie_to_supervisor,
 * stage_args (named arguments), then, as soon as the stage knows its highest
 * fd, stage_close_inherited_fds, before anything opens an fd.  The fd map
 * is stage/stage_fds.h (doc/architecture.md, "Processes and fds").
 */
#ifndef PF_STAGE_H
#define PF_STAGE_H

#include <stdint.h>
#include <stdnoreturn.h>

#include <stddef.h>

#include "sandbox/sb_lockdown.h"
#include "shm/shm_segment.h"
#include "stage/stage_fds.h"

/* Exit codes the supervisor maps to messages. */
enum stage_exit {
	STAGE_EXIT_OK = 0,
	STAGE_EXIT_FAILED = 1,	/* a syscall or the input failed: the message says what */
	STAGE_EXIT_USAGE = 2,	/* bad command line (a supervisor bug) */
	STAGE_EXIT_PEER = 3,	/* a peer stage went away: not the root cause */
};

/* "pageferry-worker[2]" etc.; used as the prefix of every message. */
void stage_set_name(const char *role, int index);
const char *stage_name(void);

/* Die with the supervisor: a stage never outlives the `pageferry` process
 * that started it (PR_SET_PDEATHSIG), so a killed front end leaves nothing
 * running that could finish, pause a guest or write a file on its own.  The
 * parent check closes the race of a supervisor that died before the prctl:
 * $PAGEFERRY_SUPERVISOR_PID names the parent we must still have.  Being
 * the first call, it also empties the capability sets only exec could use,
 * and all of them when the stage is not root (stage_privs_begin), so that
 * every thread the stage starts has them empty. */
void stage_tie_to_supervisor(void);

/* Print "<name>: <fmt...>" as one line to stderr and exit with code. */
noreturn void stage_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, appending ": strerror(-neg_errno)". */
noreturn void stage_die_errno(int neg_errno, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What the first stage_die, from any thread, calls before it writes its
 * line: a stage whose peer would otherwise learn of its death only as a
 * reset connection tells it (the receiver, its sender).  fn(arg) runs at
 * most once; NULL takes it back. */
void stage_set_last_word(void (*fn)(void *), void *arg);

/* Attach and validate the control segment on fd 3, or die. */
void stage_attach_segment(struct shm_segment *seg);
/* Map the guest file on fd 4 (size checked against the segment), or die. */
void *stage_map_guest(const struct shm_segment *seg, int writable);
/* Map a file of exactly `size` bytes shared, or die naming `what`. */
void *stage_map_file(int fd, const char *what, uint64_t size, int writable);
/* Map a worker's arena (workers/wk_arena.h) of `size` bytes on fd, or die. */
void *stage_map_arena(int fd, uint64_t size, int writable);
/* Fault in every page of a mapping now, before lock-down (allocating a
 * shared file's missing pages when writable), so that the copy does not pay
 * for it later; dies naming `what`.  A kernel without MADV_POPULATE_* (before
 * 5.14) is left to fault as it goes. */
void stage_populate(const void *p, uint64_t size, int writable, const char *what);
/* Bind ring (kind, worker) with its wake fd, or die. */
void stage_ring(const struct shm_segment *seg, enum shm_ring_kind kind, uint32_t worker, int wake_fd,
		struct shm_ring *out);
/* Lock the process into its role; dies naming the failed step.  First the
 * privileges (stage/stage_privs.h: no capability, the unprivileged user
 * the front end chose, on every thread), then the rlimits, no-new-privs and
 * the role's seccomp filter (sandbox/sb_lockdown.h). */
void stage_lockdown(enum sb_role role, int max_fd, int writes_files);

/* Relaxed statistics updates: one writer per block. */
static inline void stage_stat_add(struct shm_stats *st, int which, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(&st->v[which], memory_order_relaxed);
	atomic_store_explicit(&st->v[which], cur + v, memory_order_relaxed);
}

static inline void stage_stat_set(struct shm_stats *st, int which, uint64_t v)
{
	atomic_store_explicit(&st->v[which], v, memory_order_relaxed);
}

/* One byte from the front end on fd (a word on a socket or pipe it
 * holds): the byte, or -1 once it has gone (end of file, an error). */
int stage_read_byte(int fd);
/* One byte to the front end on fd: 0, or -errno (-EPIPE for a short write). */
int stage_write_byte(int fd, char c);

/* Close every fd the stage was not given, as sshd does: everything above
 * max_fd (close_range), and each of the `n` fds in `unused` (optional fds
 * of the map this run does not use, e.g. no pre-shared key).  What the
 * front end inherited from its own parent thus never reaches a stage.
 * Call it before anything opens an fd. */
void stage_close_inherited_fds(int max_fd, const int *unused, size_t n);

/* Named arguments: every argument is --NAME=VALUE (or --NAME for a flag).
 * stage_args() takes argv and the usage line; each stage_arg_* then looks
 * one up, and stage_args_done() refuses any argument nobody asked for.  A
 * missing, unknown, repeated or bad argument dies with a usage error (exit
 * 2) naming it: the supervisor and the stage disagree. */
void stage_args(int argc, char **argv, const char *usage);
/* A decimal in [min, max]; required. */
uint64_t stage_arg_u64(const char *name, uint64_t min, uint64_t max);
/* The same, or dflt when absent. */
uint64_t stage_arg_u64_or(const char *name, uint64_t min, uint64_t max, uint64_t dflt);
/* A non-empty string; required. */
const char *stage_arg_str(const char *name);
/* The same, or dflt when absent. */
const char *stage_arg_str_or(const char *name, const char *dflt);
/* Which of choices (NULL-terminated) the argument is: its index. Required. */
int stage_arg_choice(const char *name, const char *const *choices);
/* 1 when --NAME (without a value) was given. */
int stage_arg_flag(const char *name);
void stage_args_done(void);
/* Arguments that do not go together: "<name>: <fmt...> (usage: <usage line>)", exit 2. */
noreturn void stage_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Integration-test hook, compiled in only with -Dtest_hooks=true: with
 * PAGEFERRY_TEST_HOOK=ROLE:ACTION in the environment, the stage whose role is
 * ROLE does ACTION each time it calls this: "slow" sleeps 2 ms, "crawl"
 * 20 ms (a transfer that lasts long enough to be killed mid-way), "forbidden"
 * makes a system call its sandbox forbids, "stop" stops the stage (SIGSTOP)
 * until someone sends it SIGCONT.  Roles: "worker", "writer" (per run
 * handled), "scanner" (per run posted: the whole pipeline then lives as long
 * as the scan), "inflater" (per frame, before it is placed), and "locked":
 * every stage, once, at the end of stage_lockdown (a test inspects each
 * locked-down stage while it is stopped there). */
#ifdef PF_TEST_HOOKS
void stage_test_hook(const char *role);
#else
static inline void stage_test_hook(const char *role)
{
	(void)role;
}
#endif

/* Ring failures: -EPIPE means a peer died (it reports its own cause). */
noreturn void stage_die_ring(int rc, const char *ring_name);

#endif
