/* The syscall groups, systemd-style: each has a name and says why it exists.
 * Plain groups are NUL-separated name lists; groups that need argument
 * filters have their own function. */
#include "sandbox/sb_groups.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "stage/stage_fds.h"

static int allow_names(scmp_filter_ctx ctx, const char *names)
{
	for (const char *n = names; *n; n += strlen(n) + 1) {
		int nr = seccomp_syscall_resolve_name(n);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture */
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (rc < 0)
			return rc;
	}
	return 0;
}

#define NAMES_GROUP(fn, list)                                      \
	static int fn(scmp_filter_ctx ctx, int32_t self_pid)       \
	{                                                          \
		(void)self_pid;                                    \
		return allow_names(ctx, list);                     \
	}

NAMES_GROUP(add_exit, "exit\0exit_group\0rt_sigreturn\0restart_syscall\0")
/* A thread created before lock-down may first run after it: glibc then
 * registers its robust-futex list and rseq area, and unregisters rseq at exit.
 * Both act on the calling thread only. */
NAMES_GROUP(add_thread_self, "set_robust_list\0rseq\0")
NAMES_GROUP(add_basic_io, "read\0write\0readv\0writev\0close\0")
NAMES_GROUP(add_wake, "poll\0ppoll\0sendto\0recvfrom\0")
NAMES_GROUP(add_time, "clock_gettime\0clock_getres\0clock_nanosleep\0nanosleep\0gettimeofday\0")
NAMES_GROUP(add_self_info, "getpid\0gettid\0getppid\0getrusage\0sched_yield\0")
NAMES_GROUP(add_signal_mask, "rt_sigprocmask\0")
NAMES_GROUP(add_file_io, "pread64\0pwrite64\0preadv\0pwritev\0preadv2\0pwritev2\0lseek\0"
			 "fdatasync\0fsync\0fallocate\0ftruncate\0fstat\0")
/* Linux native AIO on a context made before lock-down: it can only read and
 * write fds the process holds (unlike io_uring, whose operations seccomp
 * never sees). */
NAMES_GROUP(add_aio, "io_submit\0io_getevents\0io_pgetevents\0io_destroy\0")
NAMES_GROUP(add_net_io, "sendmsg\0recvmsg\0getsockopt\0shutdown\0sendfile\0")

/* free() may trim the heap or unmap large chunks; madvise only with advice
 * that drops or hints pages (MADV_REMOVE punches holes in a shared file,
 * which the destination uses for zero pages). */
static int add_memory_release(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	int rc = allow_names(ctx, "munmap\0brk\0");
	static const int advice[] = { MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_WILLNEED,
				      MADV_SEQUENTIAL, MADV_NORMAL };
	for (size_t i = 0; rc == 0 && i < sizeof(advice) / sizeof(advice[0]); i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(madvise), 1,
				      SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)advice[i]));
	return rc;
}

/* glibc's internal locks; shared and private variants alike (the op is
 * compared with FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME masked off). */
static int add_futex(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	static const int ops[] = { FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET };
	const scmp_datum_t mask = ~(scmp_datum_t)(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < sizeof(ops) / sizeof(ops[0]); i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(futex), 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, mask & 0xffffffffu,
					      (scmp_datum_t)ops[i]));
	return rc;
}

/* abort() raises SIGABRT with tgkill on itself; no other target. */
static int add_self_signal(scmp_filter_ctx ctx, int32_t self_pid)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self_pid));
}

/* fstat() in glibc is newfstatat(fd, "", buf, AT_EMPTY_PATH): allow only that
 * form, so no path can be looked up. */
static int add_fstat_by_fd(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
				SCMP_A3(SCMP_CMP_EQ, AT_EMPTY_PATH));
}

/* The guest RAM file, fd 4, read with pread by the workers: their other
 * fds are rings and an arena. */
static int add_guest_read(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(pread64), 1,
				SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)STAGE_FD_GUEST));
}

/* Positioned reads and writes on the destination RAM file only (the
 * inflaters: dest/ds_place.h); their other fds are rings and an arena. */
static int add_dest_file(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(pwrite64), 1,
				SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)STAGE_FD_GUEST));
}

/* Sanitizer runtimes map shadow memory and alternate signal stacks on their
 * own schedule; only builds with -Db_sanitize get this group, and even there
 * nothing may become executable. */
static int add_sanitizer_runtime(scmp_filter_ctx ctx, int32_t self_pid)
{
	(void)self_pid;
	int rc = allow_names(ctx, "sigaltstack\0prlimit64\0getrlimit\0mremap\0rt_sigaction\0madvise\0"
				  "sched_getaffinity\0");
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	return rc;
}

static const struct sb_group groups[] = {
	{ "@exit", "leave the process, return from signal handlers", add_exit },
	{ "@thread-self", "per-thread set-up and tear-down glibc does itself", add_thread_self },
	{ "@basic-io", "read/write/close on fds already held", add_basic_io },
	{ "@wake", "sleep on and signal the ring wake sockets", add_wake },
	{ "@time", "clocks and sleeping", add_time },
	{ "@self-info", "own pid, rusage for statistics, yield", add_self_info },
	{ "@signal-mask", "block and unblock signals", add_signal_mask },
	{ "@self-signal", "tgkill on this process only (abort)", add_self_signal },
	{ "@memory-release", "free memory: munmap, brk, madvise with drop/hint advice", add_memory_release },
	{ "@futex", "libc locks", add_futex },
	{ "@fstat", "fstat on an fd, never by path", add_fstat_by_fd },
	{ "@file-io", "positioned reads/writes, seek, sync, allocate on held files", add_file_io },
	{ "@guest-read", "pread on the guest RAM file (fd 4) only", add_guest_read },
	{ "@dest-file", "pwrite on the destination RAM file (fd 4) only", add_dest_file },
	{ "@aio", "submit and reap asynchronous reads/writes on a context made before lock-down", add_aio },
	{ "@net-io", "send/receive on sockets already connected", add_net_io },
	{ "@sanitizer-runtime", "only in sanitizer builds: mmap/mprotect without PROT_EXEC and friends",
	  add_sanitizer_runtime },
};

const struct sb_group *sb_group_find(const char *name)
{
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (strcmp(groups[i].name, name) == 0)
			return &groups[i];
	return NULL;
}
