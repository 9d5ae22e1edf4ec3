/* Ring behaviour in one process: indices, wrap-around, bulk vs burst,
 * reserve/commit, corrupt indices, sleeping and peer hang-up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/shm_ring.h"

struct fixture {
	void *mem;
	struct shm_ring prod, cons;
	int fds[2];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->mem = aligned_alloc(64, shm_ring_bytes(8));
	shm_ring_format(f->mem);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fds), 0);
	assert_int_equal(shm_ring_attach(&f->prod, f->mem, 8, f->fds[0]), 0);
	assert_int_equal(shm_ring_attach(&f->cons, f->mem, 8, f->fds[1]), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->fds[0] >= 0)
		close(f->fds[0]);
	if (f->fds[1] >= 0)
		close(f->fds[1]);
	free(f->mem);
	free(f);
	return 0;
}

static struct shm_slot stamp(uint64_t i)
{
	return (struct shm_slot){ .w0 = i, .w1 = ~i * 0x9e3779b97f4a7c15ull };
}

static void test_attach_rejects_bad_sizes(void **state)
{
	(void)state;
	struct shm_ring r;
	char mem[4096] __attribute__((aligned(64)));
	assert_int_equal(shm_ring_attach(&r, mem, 12, -1), -EINVAL);
	assert_int_equal(shm_ring_attach(&r, mem, 4, -1), -EINVAL);
	assert_int_equal(shm_ring_attach(&r, mem, 0, -1), -EINVAL);
	assert_int_equal(shm_ring_attach(&r, mem, SHM_RING_MAX_SLOTS * 2, -1), -EINVAL);
}

static void test_full_and_empty(void **state)
{
	struct fixture *f = *state;
	struct shm_slot in[8], out[8];
	for (int i = 0; i < 8; i++)
		in[i] = stamp(i);
	assert_int_equal(shm_ring_ready_count(&f->cons), 0);
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 1, SHM_RING_VARIABLE), 0);
	assert_int_equal(shm_ring_free_count(&f->prod), 8);
	/* All `size` slots are usable: no slot is wasted. */
	assert_int_equal(shm_ring_enqueue(&f->prod, in, 8, SHM_RING_FIXED), 8);
	assert_int_equal(shm_ring_free_count(&f->prod), 0);
	assert_int_equal(shm_ring_enqueue(&f->prod, in, 1, SHM_RING_VARIABLE), 0);
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 8, SHM_RING_FIXED), 8);
	assert_memory_equal(in, out, sizeof(in));
	assert_int_equal(shm_ring_ready_count(&f->cons), 0);
}

static void test_bulk_is_all_or_nothing(void **state)
{
	struct fixture *f = *state;
	struct shm_slot in[8], out[8];
	for (int i = 0; i < 8; i++)
		in[i] = stamp(i);
	assert_int_equal(shm_ring_enqueue(&f->prod, in, 5, SHM_RING_FIXED), 5);
	assert_int_equal(shm_ring_enqueue(&f->prod, in, 4, SHM_RING_FIXED), 0);
	assert_int_equal(shm_ring_free_count(&f->prod), 3);
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 6, SHM_RING_FIXED), 0);
	assert_int_equal(shm_ring_ready_count(&f->cons), 5);
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 5, SHM_RING_FIXED), 5);
	assert_memory_equal(in, out, 5 * sizeof(in[0]));
}

static void test_burst_is_partial(void **state)
{
	struct fixture *f = *state;
	struct shm_slot in[8], out[8];
	for (int i = 0; i < 8; i++)
		in[i] = stamp(i);
	assert_int_equal(shm_ring_enqueue(&f->prod, in, 6, SHM_RING_VARIABLE), 6);
	assert_int_equal(shm_ring_enqueue(&f->prod, in + 6, 5, SHM_RING_VARIABLE), 2);
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 3, SHM_RING_VARIABLE), 3);
	assert_int_equal(shm_ring_dequeue(&f->cons, out + 3, 8, SHM_RING_VARIABLE), 5);
	assert_memory_equal(in, out, 8 * sizeof(in[0]));
}

/* Start both indices just below 2^32 so every operation crosses the wrap. */
static void test_wraps_across_2_pow_32(void **state)
{
	struct fixture *f = *state;
	struct shm_ring_ctrl *c = f->mem;
	atomic_store(&c->tail, UINT32_MAX - 2);
	atomic_store(&c->head, UINT32_MAX - 2);
	uint64_t next_in = 0, next_out = 0;
	for (int round = 0; round < 1000; round++) {
		struct shm_slot in[8], out[8];
		uint32_t n = 1 + (uint32_t)(round % 8);
		for (uint32_t i = 0; i < n; i++)
			in[i] = stamp(next_in + i);
		int put = shm_ring_enqueue(&f->prod, in, n, SHM_RING_VARIABLE);
		assert_true(put >= 0);
		next_in += (uint64_t)put;
		int got = shm_ring_dequeue(&f->cons, out, 8, SHM_RING_VARIABLE);
		assert_true(got >= 0);
		for (int i = 0; i < got; i++) {
			struct shm_slot want = stamp(next_out++);
			assert_memory_equal(&want, &out[i], sizeof(want));
		}
	}
	assert_int_equal(next_in, next_out);
	assert_true(atomic_load(&c->tail) < 10000); /* really wrapped */
}

static void test_reserve_commit_in_place(void **state)
{
	struct fixture *f = *state;
	struct shm_ring_ctrl *c = f->mem;
	atomic_store(&c->tail, 6);
	atomic_store(&c->head, 6);
	struct shm_slot *first = NULL, *second = NULL;
	uint32_t n_first = 0;
	assert_int_equal(shm_ring_reserve(&f->prod, 5, SHM_RING_FIXED, &first, &n_first, &second), 5);
	assert_int_equal(n_first, 2); /* slots 6,7 then 0,1,2 */
	for (uint32_t i = 0; i < 5; i++)
		*(i < n_first ? &first[i] : &second[i - n_first]) = stamp(100 + i);
	assert_int_equal(shm_ring_ready_count(&f->cons), 0); /* not visible before commit */
	shm_ring_commit(&f->prod, 5);
	struct shm_slot out[5];
	assert_int_equal(shm_ring_dequeue(&f->cons, out, 5, SHM_RING_FIXED), 5);
	for (uint32_t i = 0; i < 5; i++) {
		struct shm_slot want = stamp(100 + i);
		assert_memory_equal(&want, &out[i], sizeof(want));
	}
	assert_int_equal(shm_ring_reserve(&f->prod, 9, SHM_RING_FIXED, &first, &n_first, &second), 0);
	assert_int_equal(shm_ring_reserve(&f->prod, 9, SHM_RING_VARIABLE, &first, &n_first, &second), 8);
}

static void test_impossible_indices_are_reported(void **state)
{
	struct fixture *f = *state;
	struct shm_ring_ctrl *c = f->mem;
	struct shm_slot s[2] = { stamp(1), stamp(2) };
	/* A producer claiming more entries than the ring holds. */
	atomic_store(&c->tail, 100);
	atomic_store(&c->head, 50);
	assert_int_equal(shm_ring_dequeue(&f->cons, s, 1, SHM_RING_VARIABLE), -EPROTO);
	assert_int_equal(shm_ring_enqueue(&f->prod, s, 1, SHM_RING_VARIABLE), -EPROTO);
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, 10), -EPROTO);
	/* A consumer whose head ran ahead of the tail. */
	atomic_store(&c->tail, 10);
	atomic_store(&c->head, 11);
	assert_int_equal(shm_ring_free_count(&f->prod), -EPROTO);
	assert_int_equal(shm_ring_wait_free(&f->prod, 1, 10), -EPROTO);
}

static void test_wait_times_out_then_wakes(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, 20), 0);
	struct shm_slot s = stamp(7);
	assert_int_equal(shm_ring_enqueue(&f->prod, &s, 1, SHM_RING_FIXED), 1);
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, 20), 1);
	assert_int_equal(shm_ring_wait_free(&f->prod, 8, 20), 0);
	assert_int_equal(shm_ring_wait_free(&f->prod, 7, 20), 1);
	assert_int_equal(shm_ring_wait_ready(&f->cons, 9, 20), -EINVAL);
}

static void test_sleeping_consumer_gets_a_wake_byte(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(shm_ring_arm_consumer(&f->cons), 1);
	struct shm_ring_ctrl *c = f->mem;
	assert_int_equal(atomic_load(&c->consumer_sleeping), 1);
	struct shm_slot s = stamp(3);
	assert_int_equal(shm_ring_enqueue(&f->prod, &s, 1, SHM_RING_FIXED), 1);
	char byte;
	assert_int_equal(recv(f->fds[1], &byte, 1, MSG_DONTWAIT), 1); /* the producer woke us */
	shm_ring_disarm_consumer(&f->cons);
	assert_int_equal(shm_ring_arm_consumer(&f->cons), 0); /* work is there: do not sleep */
	assert_int_equal(atomic_load(&c->consumer_sleeping), 0);
}

static void test_peer_hangup_is_epipe(void **state)
{
	struct fixture *f = *state;
	close(f->fds[0]);
	f->fds[0] = -1;
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, 1000), -EPIPE);
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, -1), -EPIPE);
}

/* The producer's last entries arrive together with its hang-up. */
static void test_entries_left_by_a_departed_peer_still_count(void **state)
{
	struct fixture *f = *state;
	struct shm_slot s = stamp(9), out;
	assert_int_equal(shm_ring_arm_consumer(&f->cons), 1);
	shm_ring_disarm_consumer(&f->cons);
	assert_int_equal(shm_ring_enqueue(&f->prod, &s, 1, SHM_RING_FIXED), 1);
	close(f->fds[0]);
	f->fds[0] = -1;
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, -1), 1);
	assert_int_equal(shm_ring_dequeue(&f->cons, &out, 1, SHM_RING_FIXED), 1);
	assert_int_equal(shm_ring_wait_ready(&f->cons, 1, -1), -EPIPE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attach_rejects_bad_sizes),
		cmocka_unit_test_setup_teardown(test_full_and_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bulk_is_all_or_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_burst_is_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wraps_across_2_pow_32, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_commit_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_impossible_indices_are_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_times_out_then_wakes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sleeping_consumer_gets_a_wake_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_hangup_is_epipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entries_left_by_a_departed_peer_still_count, setup, teardown),
	};
	return cmocka_run_group_tests_name("shm_ring", tests, NULL, NULL);
}
