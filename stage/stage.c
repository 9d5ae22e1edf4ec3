#include "stage/stage.h"
#include "stage/stage_privs.h"
#include "stage/stage_sigbus.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static char name_buf[64] = "pageferry";
static _Atomic(void (*)(void *)) last_word;
static void *last_word_arg;

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
	void (*fn)(void *) = atomic_exchange(&last_word, NULL);
	if (fn)
		fn(last_word_arg);
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

void stage_set_last_word(void (*fn)(void *), void *arg)
{
	last_word_arg = arg;
	atomic_store(&last_word, fn);
}

static void tie_to_supervisor(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		stage_die_errno(-errno, "prctl(PR_SET_PDEATHSIG)");
	const char *expected = getenv("PAGEFERRY_SUPERVISOR_PID");
	if (expected && strtol(expected, NULL, 10) != (long)getppid())
		stage_die(STAGE_EXIT_PEER, "the pageferry process that started this stage is gone");
}

void stage_tie_to_supervisor(void)
{
	tie_to_supervisor();
	stage_privs_begin();
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

void stage_populate(const void *p, uint64_t size, int writable, const char *what)
{
	if (madvise((void *)p, size, writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) < 0 && errno != EINVAL)
		stage_die_errno(-errno, "faulting in %s", what);
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
	stage_privs_drop(role);
	/* Changing ids cleared PR_SET_PDEATHSIG; a front end that died before
	 * this is caught by the parent check. */
	tie_to_supervisor();
	int rc = sb_lockdown(role, &opt, &step);
	if (rc < 0)
		stage_die_errno(rc, "sandbox: %s", step);
	stage_test_hook("locked");
}

int stage_read_byte(int fd)
{
	unsigned char c;
	ssize_t n;
	do
		n = read(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	return n == 1 ? c : -1;
}

int stage_write_byte(int fd, char c)
{
	ssize_t n;
	do
		n = write(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n == 1 ? 0 : -EPIPE;
}

void stage_close_inherited_fds(int max_fd, const int *unused, size_t n)
{
	if (close_range((unsigned)max_fd + 1, ~0U, 0) < 0)
		stage_die_errno(-errno, "close_range(%d, ~0)", max_fd + 1);
	for (size_t k = 0; k < n; k++)
		if (close(unused[k]) < 0 && errno != EBADF)
			stage_die_errno(-errno, "closing the unused fd %d", unused[k]);
}

/* Named arguments.  At most 64, so one bit each says which were looked up. */
#define MAX_ARGS 64
static int arg_count;
static char **arg_v;
static const char *arg_usage = "";
static uint64_t arg_used;

void stage_usage_error(const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	stage_die(STAGE_EXIT_USAGE, "%s (usage: %s)", what, arg_usage);
}

/* Length of the name in argv[k] ("--NAME=..." or "--NAME"). */
static size_t arg_name_len(const char *a)
{
	const char *eq = strchr(a, '=');
	return eq ? (size_t)(eq - a) - 2 : strlen(a) - 2;
}

void stage_args(int argc, char **argv, const char *usage)
{
	arg_usage = usage;
	arg_count = argc - 1;
	arg_v = argv + 1;
	if (arg_count > MAX_ARGS)
		stage_usage_error("%d arguments are too many", arg_count);
	for (int k = 0; k < arg_count; k++) {
		const char *a = arg_v[k];
		if (strncmp(a, "--", 2) != 0 || arg_name_len(a) == 0)
			stage_usage_error("argument '%s' is not --NAME=VALUE", a);
		for (int j = 0; j < k; j++)
			if (arg_name_len(arg_v[j]) == arg_name_len(a) &&
			    strncmp(arg_v[j], a, arg_name_len(a) + 2) == 0)
				stage_usage_error("argument '%s' given twice", a);
	}
}

/* The argument --name, or NULL; *has_value: whether it had "=VALUE". */
static const char *find_arg(const char *name, int *has_value)
{
	size_t n = strlen(name);
	for (int k = 0; k < arg_count; k++) {
		const char *a = arg_v[k];
		if (arg_name_len(a) != n || strncmp(a + 2, name, n) != 0)
			continue;
		arg_used |= UINT64_C(1) << k;
		*has_value = a[n + 2] == '=';
		return *has_value ? a + n + 3 : a;
	}
	return NULL;
}

static const char *value_of(const char *name, int required)
{
	int has_value = 0;
	const char *v = find_arg(name, &has_value);
	if (!v && required)
		stage_usage_error("missing argument --%s", name);
	if (v && (!has_value || !*v))
		stage_usage_error("argument --%s needs a value", name);
	return v;
}

static uint64_t parse_u64(const char *name, const char *v, uint64_t min, uint64_t max)
{
	char *end = NULL;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (*v < '0' || *v > '9' || *end || errno || x < min || x > max)
		stage_usage_error("bad argument '--%s=%s' (expected %llu..%llu)", name, v, (unsigned long long)min,
				  (unsigned long long)max);
	return x;
}

uint64_t stage_arg_u64(const char *name, uint64_t min, uint64_t max)
{
	return parse_u64(name, value_of(name, 1), min, max);
}

uint64_t stage_arg_u64_or(const char *name, uint64_t min, uint64_t max, uint64_t dflt)
{
	const char *v = value_of(name, 0);
	return v ? parse_u64(name, v, min, max) : dflt;
}

const char *stage_arg_str(const char *name)
{
	return value_of(name, 1);
}

const char *stage_arg_str_or(const char *name, const char *dflt)
{
	const char *v = value_of(name, 0);
	return v ? v : dflt;
}

int stage_arg_choice(const char *name, const char *const *choices)
{
	const char *v = value_of(name, 1);
	for (int k = 0; choices[k]; k++)
		if (strcmp(v, choices[k]) == 0)
			return k;
	stage_usage_error("bad argument '--%s=%s'", name, v);
}

int stage_arg_flag(const char *name)
{
	int has_value = 0;
	const char *v = find_arg(name, &has_value);
	if (v && has_value)
		stage_usage_error("argument --%s takes no value", name);
	return v != NULL;
}

void stage_args_done(void)
{
	for (int k = 0; k < arg_count; k++)
		if (!(arg_used & (UINT64_C(1) << k)))
			stage_usage_error("unknown argument '%s'", arg_v[k]);
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
	else if (strcmp(hook + n + 1, "stop") == 0)
		raise(SIGSTOP); /* tgkill on ourselves: allowed by every filter */
}
#endif
