/* The live-migration mismatch rule (dest/ds_suspect.h): a packet whose
 * checksum failed is excused only when one of its pages came again intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dest/ds_suspect.h"

/* A fresh 4096-page tracker per test, and what ds_suspect_unexplained
 * last said. */
struct fixture {
	struct ds_suspect s;
	struct ds_mismatch m;
	uint64_t first, last;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f || ds_suspect_init(&f->s, 4096) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	free(*state);
	return 0;
}

static void mark(struct fixture *f, uint64_t seq, uint32_t round, uint64_t first, uint32_t n)
{
	ds_suspect_mark(&f->s, &(struct ds_mismatch){ .channel = 1, .round = round, .n_pages = n, .seq = seq,
						      .first_page = first });
}

static bool unexplained(struct fixture *f)
{
	return ds_suspect_unexplained(&f->s, &f->m, &f->first, &f->last);
}

static void test_nothing_mismatched(void **state)
{
	struct fixture *f = *state;
	ds_suspect_clear(&f->s, 0, 128, 1);
	assert_false(unexplained(f));
}

static void test_guest_wrote_a_page_in_flight(void **state)
{
	struct fixture *f = *state;
	mark(f, 3, 1, 256, 128);        /* page 300 changed in flight */
	ds_suspect_clear(&f->s, 300, 1, 2); /* round 2 sends it again, intact */
	assert_false(unexplained(f));
}

static void test_corrupted_and_never_sent_again(void **state)
{
	struct fixture *f = *state;
	mark(f, 3, 1, 256, 128);
	mark(f, 9, 1, 1024, 128);
	ds_suspect_clear(&f->s, 1030, 2, 2); /* the second one is explained */
	assert_true(unexplained(f));
	assert_int_equal(f->m.seq, 3);
	assert_int_equal(f->m.first_page, 256);
	assert_int_equal(f->first, 256);
	assert_int_equal(f->last, 383);
}

static void test_rewritten_again_then_intact(void **state)
{
	struct fixture *f = *state;
	mark(f, 3, 1, 0, 128);         /* page 5 changed in flight */
	mark(f, 20, 2, 5, 1);          /* and again in round 2 */
	ds_suspect_clear(&f->s, 5, 1, 3); /* round 3: intact */
	assert_false(unexplained(f));
}

static void test_latest_copy_decides(void **state)
{
	struct fixture *f = *state;
	/* Round 1's packet is excused by page 7; page 40's round-2 copy is
	 * corrupted and never sent again: that packet is named. */
	mark(f, 3, 1, 0, 128);
	ds_suspect_clear(&f->s, 7, 1, 2);
	mark(f, 21, 2, 40, 1);
	assert_true(unexplained(f));
	assert_int_equal(f->m.seq, 21);
	assert_int_equal(f->m.round, 2);
	assert_int_equal(f->first, 40);
	assert_int_equal(f->last, 40);
}

static void test_resent_copy_changed_too(void **state)
{
	struct fixture *f = *state;
	/* Page 101 changed in flight in round 1; its round-2 copy went in a
	 * packet that page 105 spoilt; page 105 came intact in round 3.  Pages
	 * 100 and 102 were never sent again: their round-1 copies stand. */
	mark(f, 3, 1, 100, 3);
	mark(f, 9, 2, 101, 10);
	ds_suspect_clear(&f->s, 105, 1, 3);
	assert_false(unexplained(f));
}

int main(void)
{
#define FRESH(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
	const struct CMUnitTest tests[] = {
		FRESH(test_nothing_mismatched),
		FRESH(test_guest_wrote_a_page_in_flight),
		FRESH(test_corrupted_and_never_sent_again),
		FRESH(test_rewritten_again_then_intact),
		FRESH(test_latest_copy_decides),
		FRESH(test_resent_copy_changed_too),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
