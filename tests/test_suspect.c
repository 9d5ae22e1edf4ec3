/* The live-migration mismatch rule (receiver/rc_suspect.h): a packet whose
 * checksum failed is excused only when one of its pages came again intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "receiver/rc_suspect.h"

static struct rc_suspect fresh(void)
{
	struct rc_suspect s = { 0 };
	assert_int_equal(rc_suspect_init(&s, 4096), 0);
	return s;
}

static void mark(struct rc_suspect *s, uint64_t seq, uint32_t round, uint64_t first, uint32_t n)
{
	rc_suspect_mark(s, &(struct rc_mismatch){ .channel = 1, .round = round, .n_pages = n, .seq = seq,
						  .first_page = first });
}

static void test_nothing_mismatched(void **state)
{
	(void)state;
	struct rc_suspect s = fresh();
	struct rc_mismatch m;
	uint64_t first, last;
	rc_suspect_clear(&s, 0, 128);
	assert_false(rc_suspect_unexplained(&s, &m, &first, &last));
}

static void test_guest_wrote_a_page_in_flight(void **state)
{
	(void)state;
	struct rc_suspect s = fresh();
	struct rc_mismatch m;
	uint64_t first, last;
	mark(&s, 3, 1, 256, 128); /* page 300 changed in flight */
	rc_suspect_clear(&s, 300, 1);                 /* round 2 sends it again, intact */
	assert_false(rc_suspect_unexplained(&s, &m, &first, &last));
}

static void test_corrupted_and_never_sent_again(void **state)
{
	(void)state;
	struct rc_suspect s = fresh();
	struct rc_mismatch m;
	uint64_t first, last;
	mark(&s, 3, 1, 256, 128);
	mark(&s, 9, 1, 1024, 128);
	rc_suspect_clear(&s, 1030, 2); /* the second one is explained */
	assert_true(rc_suspect_unexplained(&s, &m, &first, &last));
	assert_int_equal(m.seq, 3);
	assert_int_equal(m.first_page, 256);
	assert_int_equal(first, 256);
	assert_int_equal(last, 383);
}

static void test_rewritten_again_then_intact(void **state)
{
	(void)state;
	struct rc_suspect s = fresh();
	struct rc_mismatch m;
	uint64_t first, last;
	mark(&s, 3, 1, 0, 128);  /* page 5 changed in flight */
	mark(&s, 20, 2, 5, 1);   /* and again in round 2 */
	rc_suspect_clear(&s, 5, 1);                   /* round 3: intact */
	assert_false(rc_suspect_unexplained(&s, &m, &first, &last));
}

static void test_latest_copy_decides(void **state)
{
	(void)state;
	struct rc_suspect s = fresh();
	struct rc_mismatch m;
	uint64_t first, last;
	/* Round 1's packet is excused by page 7; page 40's round-2 copy is
	 * corrupted and never sent again: that packet is named. */
	mark(&s, 3, 1, 0, 128);
	rc_suspect_clear(&s, 7, 1);
	mark(&s, 21, 2, 40, 1);
	assert_true(rc_suspect_unexplained(&s, &m, &first, &last));
	assert_int_equal(m.seq, 21);
	assert_int_equal(m.round, 2);
	assert_int_equal(first, 40);
	assert_int_equal(last, 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nothing_mismatched),
		cmocka_unit_test(test_guest_wrote_a_page_in_flight),
		cmocka_unit_test(test_corrupted_and_never_sent_again),
		cmocka_unit_test(test_rewritten_again_then_intact),
		cmocka_unit_test(test_latest_copy_decides),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
