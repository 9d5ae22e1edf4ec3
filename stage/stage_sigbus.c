#include "stage/stage_sigbus.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "stage/stage.h"

#define SUFFIX_PARTIAL ".pf-partial"

/* Written once at registration, read by the handler: the lines are ready,
 * since formatting is not async-signal-safe. */
static struct {
	uintptr_t base, end;
	char reason[384];	/* without the stage's name */
	char line[512];		/* the whole line the handler writes */
	size_t line_len;
} maps[_STAGE_MAP_MAX];

/* Where this thread resumes after a fault on the destination mapping
 * (initial-exec: read in the handler without a call into the loader). */
static __thread sigjmp_buf *resume __attribute__((tls_model("initial-exec")));

static const char outside[] = ": bus error (SIGBUS) outside the guest and destination mappings\n";

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
	(void)sig;
	(void)uctx;
	uintptr_t a = (uintptr_t)si->si_addr;
	/* BUS_ADRERR: no page for this file offset (BUS_MCEERR_*: a memory
	 * error, reported as the generic line below). */
	for (int k = 0; si->si_code == BUS_ADRERR && k < _STAGE_MAP_MAX; k++)
		if (maps[k].end && a >= maps[k].base && a < maps[k].end) {
			sigjmp_buf *to = resume;
			if (to && k == STAGE_MAP_DEST) {
				resume = NULL;
				siglongjmp(*to, 1);
			}
			(void)!write(2, maps[k].line, maps[k].line_len);
			_exit(STAGE_EXIT_FAILED);
		}
	/* Not ours to explain; rt_sigaction is not in the sandbox, so the
	 * default action cannot be restored: say what happened and end. */
	const char *name = stage_name();
	char line[128];
	size_t n = strlen(name), m = sizeof(outside) - 1;
	if (n > sizeof(line) - m)
		n = sizeof(line) - m;
	memcpy(line, name, n);
	memcpy(line + n, outside, m);
	(void)!write(2, line, n + m);
	_exit(STAGE_EXIT_FAILED);
}

/* The file's name as the user gave it: a destination being written is
 * FILE.pf-partial, and FILE is what the user knows. */
static void file_name(int fd, char *out, size_t len)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, len - 1);
	if (n <= 0) {
		snprintf(out, len, "fd %d", fd);
		return;
	}
	out[n] = 0;
	size_t s = strlen(SUFFIX_PARTIAL);
	if ((size_t)n > s && strcmp(out + n - s, SUFFIX_PARTIAL) == 0)
		out[n - s] = 0;
}

void stage_fault_describe(enum stage_mapping kind, int fd, uint64_t size, char *out, size_t len)
{
	char name[256];
	file_name(fd, name, sizeof(name));
	if (kind == STAGE_MAP_GUEST)
		snprintf(out, len, "the guest file %s shrank while it was copied (it was %llu bytes)", name,
			 (unsigned long long)size);
	else
		snprintf(out, len, "no space left on %s for the guest's pages (the filesystem is full)", name);
}

void stage_sigbus_watch(enum stage_mapping kind, const void *base, uint64_t size, int fd)
{
	char reason[sizeof(maps[kind].reason)];
	stage_fault_describe(kind, fd, size, reason, sizeof(reason));
	memcpy(maps[kind].reason, reason, sizeof(reason));
	int n = snprintf(maps[kind].line, sizeof(maps[kind].line), "%s: %s\n", stage_name(), reason);
	if (n < 0 || (size_t)n >= sizeof(maps[kind].line)) { /* cut short: still one line */
		n = (int)sizeof(maps[kind].line) - 1;
		maps[kind].line[n - 1] = '\n';
	}
	maps[kind].line_len = (size_t)n;
	maps[kind].base = (uintptr_t)base;
	maps[kind].end = (uintptr_t)base + size;

	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		stage_die_errno(-errno, "installing the SIGBUS handler");
}

const char *stage_fault_reason(enum stage_mapping kind)
{
	return maps[kind].end ? maps[kind].reason : NULL;
}

void stage_die_if_fault(enum stage_mapping kind, int neg_errno)
{
	if (neg_errno == -EFAULT && maps[kind].end)
		stage_die(STAGE_EXIT_FAILED, "%s", maps[kind].reason);
}

void stage_fault_guard(sigjmp_buf *to)
{
	resume = to;
}

int stage_fault_recovered(void)
{
	resume = NULL;
	sigset_t bus;
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	/* The handler ran with SIGBUS blocked and the jump kept that mask. */
	int rc = pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
	if (rc != 0)
		stage_die_errno(-rc, "unblocking SIGBUS");
	return -ENOSPC;
}
