#include "stage/stage.h"
#include "stage/stage_sigbus.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static char name_buf[64] = "pageferry";

void stage_set_name(const char *role, int index)
{
	if (index >= 0)
		snprintf(name_buf, sizeof(name_buf), "pageferry-%s[%d]", role, index);
	else
		snprintf(name_buf, sizeof(name_buf), "pageferry-%s", role);
}

const char *stage_name(void)
{
	return name_buf;
}

/* One write(2) per message, so lines from several stages never interleave
 * and nothing here needs a syscall the sandbox forbids. */
static noreturn void vdie(int code, int neg_errno, const char *fmt, va_list ap)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "%s: ", name_buf);
	if (n < 0)
		n = 0;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m > 0)
		n = n + m < (int)sizeof(line) ? n + m : (int)sizeof(line) - 1;
	if (neg_errno)
		n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s", strerror(-neg_errno));
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
	_exit(code);
}

void stage_tie_to_supervisor(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		stage_die_errno(-errno, "prctl(PR_SET_PDEATHSIG)");
	const char *expected = getenv("PAGEFERRY_SUPERVISOR_PID");
	if (expected && strtol(expected, NULL, 10) != (long)getppid())
		stage_die(STAGE_EXIT_PEER, "the pageferry process that started this stage is gone");
}

void stage_die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vdie(code, 0, fmt, ap);
}

void stage_die_errno(int neg_errno, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vdie(STAGE_EXIT_FAILED, neg_errno, fmt, ap);
}

void stage_die_ring(int rc, const char *ring_name)
{
	if (rc == -EPIPE)
		stage_die(STAGE_EXIT_PEER, "%s: the peer stage went away", ring_name);
	if (rc == -EPROTO)
		stage_die(STAGE_EXIT_FAILED, "%s: peer published impossible ring indices", ring_name);
	stage_die_errno(rc, "%s", ring_name);
}

void stage_attach_segment(struct shm_segment *seg)
{
	const char *why = NULL;
	int rc = shm_segment_attach(seg, STAGE_FD_SEGMENT, &why);
	if (rc < 0 && why)
		stage_die(STAGE_EXIT_FAILED, "control segment on fd 3: %s", why);
	if (rc < 0)
		stage_die_errno(rc, "control segment on fd 3");
}

void *stage_map_file(int fd, const char *what, uint64_t size, int writable)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		stage_die_errno(-errno, "%s on fd %d", what, fd);
	if ((uint64_t)st.st_size != size)
		stage_die(STAGE_EXIT_FAILED, "%s is %llu bytes, expected %llu", what,
			  (unsigned long long)st.st_size, (unsigned long long)size);
	void *p = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		stage_die_errno(-errno, "mmap %s", what);
	if (fd == STAGE_FD_GUEST) /* source guest, or the destination it becomes */
		stage_sigbus_watch(writable ? STAGE_MAP_DEST : STAGE_MAP_GUEST, p, size, fd);
	return p;
}

void *stage_map_guest(const struct shm_segment *seg, int writable)
{
	return stage_map_file(STAGE_FD_GUEST, "guest file", seg->geo.guest_pages * seg->geo.page_size, writable);
}

void *stage_map_arena(int fd, uint64_t size, int writable)
{
	return stage_map_file(fd, "arena", size, writable);
}

void stage_ring(const struct shm_segment *seg, enum shm_ring_kind kind, uint32_t worker, int wake_fd,
		struct shm_ring *out)
{
	int rc = shm_segment_ring(seg, kind, worker, wake_fd, out);
	if (rc < 0)
		stage_die_errno(rc, "ring %d of worker %u", (int)kind, worker);
}

void stage_lockdown(enum sb_role role, int max_fd, int writes_files)
{
	struct sb_options opt = { .mode = sb_default_mode(), .max_fd = max_fd,
				  .writes_files = writes_files != 0 };
	const char *step = "lock-down";
	int rc = sb_lockdown(role, &opt, &step);
	if (rc < 0)
		stage_die_errno(rc, "sandbox: %s", step);
}

uint64_t stage_parse_u64(const char *what, const char *s, uint64_t min, uint64_t max)
{
	char *end = NULL;
	errno = 0;
	unsigned long long v = s ? strtoull(s, &end, 10) : 0;
	if (!s || !*s || *end || errno || v < min || v > max)
		stage_die(STAGE_EXIT_USAGE, "bad %s '%s' (expected %llu..%llu)", what, s ? s : "",
			  (unsigned long long)min, (unsigned long long)max);
	return v;
}

#ifdef PF_TEST_HOOKS
#include <sys/socket.h>
#include <sys/syscall.h>

void stage_test_hook(const char *role)
{
	const char *hook = getenv("PAGEFERRY_TEST_HOOK");
	size_t n = strlen(role);
	if (!hook || strncmp(hook, role, n) != 0 || hook[n] != ':')
		return;
	if (strcmp(hook + n + 1, "slow") == 0)
		usleep(2000);
	else if (strcmp(hook + n + 1, "crawl") == 0)
		usleep(20000);
	else if (strcmp(hook + n + 1, "forbidden") == 0)
		syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
}
#endif
