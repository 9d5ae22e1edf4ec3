/* Cross-process stress: a forked producer and consumer on a memfd ring pass
 * tens of millions of stamped descriptors; every one must arrive exactly once,
 * in order, intact.  Then: a consumer killed mid-stream leaves the producer
 * with an error, not a hang. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/shm_segment.h"

#define BURST 32u

static uint64_t stress_count(void)
{
	const char *env = getenv("PF_STRESS_DESCRIPTORS");
	return env ? strtoull(env, NULL, 10) : 50000000ull;
}

static struct shm_slot stamp(uint64_t i)
{
	return (struct shm_slot){ .w0 = i, .w1 = (i ^ 0xa5a5a5a5a5a5a5a5ull) * 0x9e3779b97f4a7c15ull };
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Child bodies return an exit status: 0 ok, 2 ring error, 3 bad data, 4 peer gone. */
static int produce(int seg_fd, int wake_fd, uint64_t count)
{
	struct shm_segment seg;
	struct shm_ring r;
	if (shm_segment_attach(&seg, seg_fd, NULL) < 0 ||
	    shm_segment_ring(&seg, SHM_RING_SCAN_TO_WORKER, 0, wake_fd, &r) < 0)
		return 2;
	struct shm_slot batch[BURST];
	uint64_t sent = 0;
	while (sent < count) {
		uint32_t n = count - sent < BURST ? (uint32_t)(count - sent) : BURST;
		for (uint32_t i = 0; i < n; i++)
			batch[i] = stamp(sent + i);
		int put = shm_ring_enqueue(&r, batch, n, SHM_RING_VARIABLE);
		if (put < 0)
			return 2;
		sent += (uint64_t)put;
		if (put == 0) {
			int w = shm_ring_wait_free(&r, 1, -1);
			if (w == -EPIPE)
				return 4;
			if (w < 0)
				return 2;
		}
	}
	return 0;
}

static int consume(int seg_fd, int wake_fd, uint64_t count)
{
	struct shm_segment seg;
	struct shm_ring r;
	if (shm_segment_attach(&seg, seg_fd, NULL) < 0 ||
	    shm_segment_ring(&seg, SHM_RING_SCAN_TO_WORKER, 0, wake_fd, &r) < 0)
		return 2;
	struct shm_slot batch[BURST];
	uint64_t got = 0;
	while (got < count) {
		int n = shm_ring_dequeue(&r, batch, BURST, SHM_RING_VARIABLE);
		if (n < 0)
			return 2;
		for (int i = 0; i < n; i++) {
			struct shm_slot want = stamp(got + (uint64_t)i);
			if (batch[i].w0 != want.w0 || batch[i].w1 != want.w1) {
				fprintf(stderr, "descriptor %llu: got %016llx/%016llx\n",
					(unsigned long long)(got + (uint64_t)i),
					(unsigned long long)batch[i].w0, (unsigned long long)batch[i].w1);
				return 3;
			}
		}
		got += (uint64_t)n;
		if (n == 0) {
			int w = shm_ring_wait_ready(&r, 1, -1);
			if (w == -EPIPE)
				return 4;
			if (w < 0)
				return 2;
		}
	}
	return 0;
}

struct pair {
	int seg_fd;
	int fds[2];
};

static void make_pair(struct pair *p, uint32_t slots)
{
	struct shm_geometry g = { .page_size = 4096, .n_workers = 1, .ring_slots = slots,
				  .max_run_pages = 1, .guest_pages = 1 };
	p->seg_fd = shm_segment_create(&g);
	assert_true(p->seg_fd >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->fds), 0);
}

/* The child keeps only its own end of the wake socketpair, as the supervisor
 * arranges for real stages: otherwise a dead peer's end stays open here. */
static pid_t spawn(int (*body)(int, int, uint64_t), int seg_fd, int wake_fd, int peer_fd,
		   uint64_t count)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(peer_fd);
		_exit(body(seg_fd, wake_fd, count));
	}
	return pid;
}

static int wait_status(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void test_stamped_descriptors_arrive_once_in_order(void **state)
{
	(void)state;
	uint64_t count = stress_count();
	struct pair p;
	make_pair(&p, 1024);
	double t0 = now_s();
	pid_t prod = spawn(produce, p.seg_fd, p.fds[0], p.fds[1], count);
	pid_t cons = spawn(consume, p.seg_fd, p.fds[1], p.fds[0], count);
	close(p.fds[0]);
	close(p.fds[1]);
	int cs = wait_status(cons), ps = wait_status(prod);
	double secs = now_s() - t0;
	close(p.seg_fd);
	assert_true(WIFEXITED(ps));
	assert_int_equal(WEXITSTATUS(ps), 0);
	assert_true(WIFEXITED(cs));
	assert_int_equal(WEXITSTATUS(cs), 0);
	printf("# ring stress: %llu descriptors across processes in %.2f s: %.1f M descriptors/s\n",
	       (unsigned long long)count, secs, (double)count / secs / 1e6);
}

static void test_killed_consumer_leaves_producer_with_error(void **state)
{
	(void)state;
	struct pair p;
	make_pair(&p, 256);
	pid_t prod = spawn(produce, p.seg_fd, p.fds[0], p.fds[1], UINT64_MAX);
	pid_t cons = spawn(consume, p.seg_fd, p.fds[1], p.fds[0], UINT64_MAX);
	close(p.fds[0]);
	close(p.fds[1]);
	usleep(200 * 1000); /* mid-stream */
	assert_int_equal(kill(cons, SIGKILL), 0);
	int cs = wait_status(cons);
	assert_true(WIFSIGNALED(cs));
	/* The producer must notice on its own: bounded by an alarm, not a hang. */
	alarm(30);
	int ps = wait_status(prod);
	alarm(0);
	assert_true(WIFEXITED(ps));
	assert_int_equal(WEXITSTATUS(ps), 4); /* -EPIPE: peer gone */
	close(p.seg_fd);
}

static void test_killed_producer_leaves_consumer_with_error(void **state)
{
	(void)state;
	struct pair p;
	make_pair(&p, 256);
	pid_t prod = spawn(produce, p.seg_fd, p.fds[0], p.fds[1], UINT64_MAX);
	pid_t cons = spawn(consume, p.seg_fd, p.fds[1], p.fds[0], UINT64_MAX);
	close(p.fds[0]);
	close(p.fds[1]);
	usleep(200 * 1000);
	assert_int_equal(kill(prod, SIGKILL), 0);
	wait_status(prod);
	alarm(30);
	int cs = wait_status(cons);
	alarm(0);
	assert_true(WIFEXITED(cs));
	assert_int_equal(WEXITSTATUS(cs), 4);
	close(p.seg_fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stamped_descriptors_arrive_once_in_order),
		cmocka_unit_test(test_killed_consumer_leaves_producer_with_error),
		cmocka_unit_test(test_killed_producer_leaves_consumer_with_error),
	};
	return cmocka_run_group_tests_name("shm_ring_stress", tests, NULL, NULL);
}
