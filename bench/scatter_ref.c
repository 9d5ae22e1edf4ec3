/* Reference for bench/snapshot.sh: what the disk does with the very writes a
 * snapshot of GUEST must make (its non-zero pages, runs of adjacent ones
 * merged, at their mapped-ram offsets) and the reads a restore must make,
 * with DEPTH requests in flight and nothing else running: no rings, no
 * workers, no bitmap.  Prints MiB/s for the non-zero bytes.
 *
 * usage: pf-scatter-ref GUEST FILE-ON-DISK DEPTH
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dio/dio_queue.h"

#define PAGE 4096u
#define DATA_OFFSET (1u << 20)
#define MAX_WRITE (4u << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "pf-scatter-ref: %s: %s\n", what, strerror(err));
	exit(1);
}

static int is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];
	return memcmp(p, zero, PAGE) == 0;
}

/* One pass over the guest's non-zero runs: write them from the guest, or
 * read them back into `into`. */
static double pass(struct dio_queue *q, enum dio_op op, int fd, uint8_t *guest, uint8_t *into,
		   const uint8_t *present, uint64_t pages)
{
	double t0 = now();
	uint64_t p = 0;
	while (p < pages) {
		if (!present[p]) {
			p++;
			continue;
		}
		uint64_t run = p;
		while (p < pages && present[p] && (p - run + 1) * PAGE <= MAX_WRITE)
			p++;
		uint8_t *buf = (op == DIO_WRITE ? guest : into) + run * PAGE;
		int rc = dio_queue_submit(q, op, fd, buf, (p - run) * PAGE, DATA_OFFSET + run * PAGE, run);
		if (rc < 0)
			die(op == DIO_WRITE ? "write" : "read", -rc);
	}
	int rc = dio_queue_drain(q);
	if (rc < 0)
		die("drain", -rc);
	if (op == DIO_WRITE && fdatasync(fd) < 0)
		die("fdatasync", errno);
	return now() - t0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: pf-scatter-ref GUEST FILE-ON-DISK DEPTH\n");
		return 2;
	}
	int gfd = open(argv[1], O_RDONLY);
	struct stat st;
	if (gfd < 0 || fstat(gfd, &st) < 0)
		die(argv[1], errno);
	uint64_t pages = (uint64_t)st.st_size / PAGE;
	uint8_t *guest = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, gfd, 0);
	uint8_t *into = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	uint8_t *present = calloc(pages, 1);
	if (guest == MAP_FAILED || into == MAP_FAILED || !present)
		die("mapping", errno);
	uint64_t n_present = 0;
	for (uint64_t p = 0; p < pages; p++)
		n_present += present[p] = !is_zero(guest + p * PAGE);

	int fd = open(argv[2], O_CREAT | O_TRUNC | O_RDWR | O_DIRECT, 0600);
	if (fd < 0)
		die(argv[2], errno);
	if (ftruncate(fd, (off_t)(DATA_OFFSET + pages * PAGE)) < 0)
		die("ftruncate", errno);
	struct dio_queue q;
	int rc = dio_queue_init(&q, (uint32_t)atoi(argv[3]), NULL, NULL);
	if (rc < 0)
		die("io_setup", -rc);
	double tw = pass(&q, DIO_WRITE, fd, guest, into, present, pages);
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
		die("posix_fadvise", errno);
	double tr = pass(&q, DIO_READ, fd, guest, into, present, pages);
	unlink(argv[2]);
	double mib = (double)n_present * PAGE / 1048576.0;
	printf("%.1f %.1f\n", mib / tw, mib / tr);
	return 0;
}
