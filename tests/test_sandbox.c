/* Seccomp policies, for real: each role is locked down in a forked child,
 * which then makes allowed calls (must survive) or one forbidden call (must
 * die of SIGSYS). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox/sb_lockdown.h"

static int scratch_fd = -1;	/* a real file every child inherits */
static int sock[2] = { -1, -1 };

static int group_setup(void **state)
{
	(void)state;
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 || seccomp_api_get() < 1) {
		fprintf(stderr, "seccomp is not available here\n");
		exit(77);
	}
	char path[] = "/tmp/pf-sandbox-XXXXXX";
	scratch_fd = mkstemp(path);
	assert_true(scratch_fd >= 0);
	unlink(path);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sock), 0);
	return 0;
}

static void lock(enum sb_role role, enum sb_mode mode)
{
	struct sb_options opt = { .mode = mode, .max_fd = 64,
				  .writes_files = role == SB_ROLE_WRITER || role == SB_ROLE_RESTORE ||
						  role == SB_ROLE_RECEIVE };
	const char *step = NULL;
	if (sb_lockdown(role, &opt, &step) < 0)
		_exit(50);
}

/* What every role does in normal operation. */
static int common_calls(void)
{
	char byte = 'x';
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 10;
	if (send(sock[0], &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		return 11;
	struct pollfd p = { .fd = sock[1], .events = POLLIN };
	if (poll(&p, 1, 1000) != 1 || recv(sock[1], &byte, 1, MSG_DONTWAIT) != 1)
		return 12;
	if (write(sock[0], &byte, 1) != 1 || read(sock[1], &byte, 1) != 1)
		return 13;
	if (getpid() <= 0)
		return 14;
	void *small = malloc(64); /* the heap, as libc uses it */
	free(small);
	struct stat st;
	if (fstat(scratch_fd, &st) < 0)
		return 15;
	return 0;
}

static int role_calls(enum sb_role role)
{
	char page[4096] = { 1 };
	switch (role) {
	case SB_ROLE_SCANNER:
		return lseek(scratch_fd, 0, SEEK_DATA) < 0 && errno != ENXIO ? 20 : 0;
	case SB_ROLE_WRITER:
	case SB_ROLE_RESTORE:
	case SB_ROLE_RECEIVE:
		if (pwrite(scratch_fd, page, sizeof(page), 0) != sizeof(page))
			return 21;
		if (pread(scratch_fd, page, sizeof(page), 0) != sizeof(page))
			return 22;
		if (fdatasync(scratch_fd) < 0)
			return 23;
		return 0;
	default:
		return 0;
	}
}

enum forbidden { F_OPEN, F_SOCKET, F_EXECVE, F_MMAP_EXEC, F_MMAP_PLAIN, F_KILL_OTHER, F_FORK };

static void do_forbidden(enum forbidden what)
{
	switch (what) {
	case F_OPEN:
		syscall(SYS_openat, AT_FDCWD, "/etc/hostname", O_RDONLY);
		break;
	case F_SOCKET:
		syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
		break;
	case F_EXECVE: {
		char *argv[] = { "/bin/true", NULL };
		syscall(SYS_execve, "/bin/true", argv, NULL);
		break;
	}
	case F_MMAP_EXEC:
		syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case F_MMAP_PLAIN:
		syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case F_KILL_OTHER:
		syscall(SYS_tgkill, getppid(), getppid(), 0);
		break;
	case F_FORK:
		syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
		break;
	}
}

static int run_child(enum sb_role role, enum sb_mode mode, int forbidden)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lock(role, mode);
		int rc = common_calls();
		if (rc == 0)
			rc = role_calls(role);
		if (rc == 0 && forbidden >= 0) {
			do_forbidden((enum forbidden)forbidden);
			rc = 99; /* survived a forbidden call */
		}
		_exit(rc);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void expect_survives(enum sb_role role)
{
	int st = run_child(role, SB_MODE_KILL, -1);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("role %s: allowed calls failed (status 0x%x)", sb_role_name(role), st);
}

static void expect_sigsys(enum sb_role role, enum forbidden what)
{
	int st = run_child(role, SB_MODE_KILL, what);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail_msg("role %s, forbidden call %d: expected SIGSYS, got status 0x%x",
			 sb_role_name(role), what, st);
}

static void test_each_role_keeps_its_allowed_calls(void **state)
{
	(void)state;
	for (int r = 0; r < _SB_ROLE_MAX; r++)
		expect_survives((enum sb_role)r);
}

static void test_forbidden_calls_kill_with_sigsys(void **state)
{
	(void)state;
	const enum forbidden all[] = { F_OPEN, F_SOCKET, F_EXECVE, F_MMAP_EXEC, F_KILL_OTHER, F_FORK };
	for (int r = 0; r < _SB_ROLE_MAX; r++)
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			expect_sigsys((enum sb_role)r, all[i]);
#ifndef PF_SANITIZER_BUILD
	/* Workers may not map anything after set-up (sanitizer runtimes need to). */
	expect_sigsys(SB_ROLE_WORKER, F_MMAP_PLAIN);
#endif
}

/* One call a role must not make: its child dies of SIGSYS. */
enum role_call { C_PWRITE, C_SENDMSG, C_IO_SUBMIT };

static void expect_refused(enum sb_role role, enum role_call call)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		lock(role, SB_MODE_KILL);
		char page[16] = { 0 };
		struct iovec iov = { page, 1 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (call == C_PWRITE)
			syscall(SYS_pwrite64, scratch_fd, page, sizeof(page), 0);
		else if (call == C_SENDMSG)
			syscall(SYS_sendmsg, sock[0], &m, MSG_DONTWAIT);
		else
			syscall(SYS_io_submit, 0, 0, NULL);
		_exit(99);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail_msg("role %s, call %d: expected SIGSYS, got status 0x%x", sb_role_name(role), call, st);
}

static void test_workers_cannot_touch_files(void **state)
{
	(void)state;
	expect_refused(SB_ROLE_WORKER, C_PWRITE);
	expect_refused(SB_ROLE_INFLATER, C_PWRITE);
}

/* The destination's three programs get three policies: restore reads by
 * AIO and has no sockets, receive has sockets and no AIO, an inflater has
 * neither files nor sockets nor mappings. */
static void test_destination_roles_are_apart(void **state)
{
	(void)state;
	expect_refused(SB_ROLE_RESTORE, C_SENDMSG);
	expect_refused(SB_ROLE_RECEIVE, C_IO_SUBMIT);
	expect_refused(SB_ROLE_INFLATER, C_SENDMSG);
	expect_refused(SB_ROLE_INFLATER, C_IO_SUBMIT);
#ifndef PF_SANITIZER_BUILD
	expect_sigsys(SB_ROLE_INFLATER, F_MMAP_PLAIN);
#endif
}

static void test_log_mode_lets_forbidden_calls_through(void **state)
{
	(void)state;
	int st = run_child(SB_ROLE_WORKER, SB_MODE_LOG, F_OPEN);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 99);
}

static void test_lockdown_names_the_failing_step(void **state)
{
	(void)state;
	struct sb_options bad = { .mode = SB_MODE_KILL, .max_fd = 1 };
	const char *step = NULL;
	assert_int_equal(sb_lockdown(SB_ROLE_WORKER, &bad, &step), -EINVAL);
	assert_string_equal(step, "sandbox options");
	assert_int_equal(sb_lockdown(_SB_ROLE_MAX, &bad, &step), -EINVAL);
	assert_null(sb_policy_build(_SB_ROLE_MAX, SB_MODE_KILL, 1));
	assert_string_equal(sb_role_name(SB_ROLE_WRITER), "writer");
	const char *const *g = sb_role_groups(SB_ROLE_WORKER);
	for (; *g; g++)
		assert_string_not_equal(*g, "@file-io");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_role_keeps_its_allowed_calls),
		cmocka_unit_test(test_forbidden_calls_kill_with_sigsys),
		cmocka_unit_test(test_workers_cannot_touch_files),
		cmocka_unit_test(test_destination_roles_are_apart),
		cmocka_unit_test(test_log_mode_lets_forbidden_calls_through),
		cmocka_unit_test(test_lockdown_names_the_failing_step),
	};
	return cmocka_run_group_tests_name("sandbox", tests, group_setup, NULL);
}
