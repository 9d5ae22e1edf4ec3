/* Placing pages into a mapped destination (dest/ds_place.h) whose file has
 * no page for the offset: the store faults (SIGBUS), and ds_place_write
 * must return -ENOSPC as a pwrite on a full filesystem would, every time.
 * (Which bytes before the fault landed is memcpy's business: it may copy
 * the tail first.)
 * A file shorter than its mapping faults the same way a full tmpfs or
 * hugetlbfs does (BUS_ADRERR), without needing root to mount one. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dest/ds_place.h"
#include "stage/stage.h"
#include "stage/stage_sigbus.h"

#define PAGE 4096u

struct short_file {
	int fd;
	struct ds_place pl;
};

/* A mapping of 4 pages over a file of 2: pages 2 and 3 have no backing. */
static int setup(void **state)
{
	static struct short_file f;
	f.fd = memfd_create("pf-test-place", MFD_CLOEXEC);
	assert_true(f.fd >= 0);
	assert_int_equal(ftruncate(f.fd, 4 * PAGE), 0);
	memset(&f.pl, 0, sizeof(f.pl));
	f.pl.fd = f.fd;
	f.pl.map = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd, 0);
	assert_true(f.pl.map != MAP_FAILED);
	assert_int_equal(ftruncate(f.fd, 2 * PAGE), 0);
	*state = &f;
	return 0;
}

/* cmocka catches SIGBUS itself around every test: ours goes in after. */
static struct short_file *watched(void **state)
{
	struct short_file *f = *state;
	stage_sigbus_watch(STAGE_MAP_DEST, f->pl.map, 4 * PAGE, f->fd);
	return f;
}

static int teardown(void **state)
{
	struct short_file *f = *state;
	munmap(f->pl.map, 4 * PAGE);
	close(f->fd);
	return 0;
}

static void test_a_store_that_faults_fails_with_enospc(void **state)
{
	struct short_file *f = watched(state);
	uint8_t src[2 * PAGE];
	memset(src, 0xa5, sizeof(src));
	/* Straddling the end: the second page faults. */
	assert_int_equal(ds_place_write(&f->pl, src, sizeof(src), PAGE), -ENOSPC);
	/* Zeros take the same path. */
	assert_int_equal(ds_place_write_zeros(&f->pl, 3 * PAGE, PAGE), -ENOSPC);
}

static void test_faults_are_caught_again_after_one(void **state)
{
	struct short_file *f = watched(state);
	uint8_t src[PAGE];
	memset(src, 0x5a, sizeof(src));
	/* Each recovery unblocks SIGBUS again: a blocked SIGBUS would kill. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ds_place_write(&f->pl, src, sizeof(src), 2 * PAGE), -ENOSPC);
	sigset_t now;
	assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &now), 0);
	assert_false(sigismember(&now, SIGBUS));
	/* And a store that fits still works. */
	assert_int_equal(ds_place_write(&f->pl, src, sizeof(src), 0), 0);
	assert_memory_equal(f->pl.map, src, sizeof(src));
}

static void test_no_guard_is_left_behind(void **state)
{
	/* After a recovered fault and a clean store, a fault outside any
	 * guard ends the process with the destination's line, as before. */
	struct short_file *f = watched(state);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		f->pl.map[3 * PAGE] = 1;
		_exit(0); /* not reached */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), STAGE_EXIT_FAILED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_store_that_faults_fails_with_enospc),
		cmocka_unit_test(test_faults_are_caught_again_after_one),
		cmocka_unit_test(test_no_guard_is_left_behind),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
