/* The control segment: creation, sealing, and refusal of bad headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/shm_segment.h"

static const struct shm_geometry geo = { .page_size = 4096, .n_workers = 3, .ring_slots = 64,
					 .max_run_pages = 256, .guest_pages = 262144 };

static void test_create_attach_roundtrip(void **state)
{
	(void)state;
	int fd = shm_segment_create(&geo);
	assert_true(fd >= 0);
	struct shm_segment seg;
	const char *why = NULL;
	assert_int_equal(shm_segment_attach(&seg, fd, &why), 0);
	assert_int_equal(seg.geo.n_workers, 3);
	assert_int_equal(seg.geo.guest_pages, 262144);
	assert_int_equal(seg.n_rings, 9);
	assert_int_equal(seg.size, shm_segment_size(&geo));
	/* Rings and stats blocks lie inside the mapping and do not overlap. */
	uint8_t *last_ring = shm_segment_ring_mem(&seg, seg.n_rings - 1);
	assert_true(last_ring + shm_ring_bytes(64) <= (uint8_t *)shm_segment_stats(&seg, 0));
	assert_true((uint8_t *)(shm_segment_stats(&seg, seg.n_stats - 1) + 1) <= seg.base + seg.size);
	struct shm_ring r;
	assert_int_equal(shm_segment_ring(&seg, SHM_RING_WORKER_TO_WRITER, 2, -1, &r), 0);
	assert_int_equal(shm_segment_ring(&seg, SHM_RING_WORKER_TO_WRITER, 3, -1, &r), -EINVAL);
	/* Sealed: nobody can shrink it under a peer's mapping. */
	assert_int_equal(ftruncate(fd, 4096), -1);
	assert_int_equal(errno, EPERM);
	shm_segment_detach(&seg);
	close(fd);
}

static void test_invalid_geometry_is_refused(void **state)
{
	(void)state;
	struct shm_geometry g = geo;
	g.ring_slots = 100;
	assert_int_equal(shm_segment_create(&g), -EINVAL);
	g = geo;
	g.n_workers = 0;
	assert_int_equal(shm_segment_create(&g), -EINVAL);
	g = geo;
	g.n_workers = SHM_MAX_WORKERS + 1;
	assert_int_equal(shm_segment_size(&g), 0);
}

/* An unsealed memfd with a copy of a good segment lets us corrupt fields. */
static int corrupt_copy(size_t field_offset, uint64_t value, size_t width)
{
	int good = shm_segment_create(&geo);
	uint64_t size = shm_segment_size(&geo);
	uint8_t *src = mmap(NULL, size, PROT_READ, MAP_SHARED, good, 0);
	int fd = memfd_create("corrupt", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	uint8_t *dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	memcpy(dst, src, size);
	memcpy(dst + field_offset, &value, width);
	munmap(src, size);
	munmap(dst, size);
	close(good);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
	return fd;
}

static void expect_refused(size_t off, uint64_t value, size_t width, int code, const char *msg)
{
	int fd = corrupt_copy(off, value, width);
	struct shm_segment seg;
	const char *why = NULL;
	assert_int_equal(shm_segment_attach(&seg, fd, &why), code);
	assert_string_equal(why, msg);
	close(fd);
}

static void test_corrupt_headers_are_refused(void **state)
{
	(void)state;
	expect_refused(offsetof(struct shm_seg_header, magic), 0x1234, 8, -EBADMSG,
		       "control segment has a bad magic");
	expect_refused(offsetof(struct shm_seg_header, abi_version), 99, 4, -EPROTO,
		       "control segment ABI version differs from this binary's");
	expect_refused(offsetof(struct shm_seg_header, ring_slots), 96, 4, -EBADMSG,
		       "control segment geometry is invalid");
	expect_refused(offsetof(struct shm_seg_header, rings_offset), 1u << 30, 8, -EBADMSG,
		       "control segment offsets disagree with its geometry");
	expect_refused(offsetof(struct shm_seg_header, n_workers), 4, 4, -EBADMSG,
		       "control segment offsets disagree with its geometry");
}

static void test_unsealed_segment_is_refused(void **state)
{
	(void)state;
	int fd = memfd_create("unsealed", MFD_CLOEXEC);
	assert_int_equal(ftruncate(fd, 65536), 0);
	struct shm_segment seg;
	const char *why = NULL;
	assert_int_equal(shm_segment_attach(&seg, fd, &why), -EBADMSG);
	assert_string_equal(why, "control segment is not sealed against resizing");
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_attach_roundtrip),
		cmocka_unit_test(test_invalid_geometry_is_refused),
		cmocka_unit_test(test_corrupt_headers_are_refused),
		cmocka_unit_test(test_unsealed_segment_is_refused),
	};
	return cmocka_run_group_tests_name("shm_segment", tests, NULL, NULL);
}
