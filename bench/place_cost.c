/* pf-place-cost: what it costs to write a RAM file's pages, and to read
 * them, through a new mapping against pwrite/pread with a small buffer —
 * the choice dest/ds_place.h makes.  On a paravirtualised VM a page's
 * first touch through a new mapping is expensive; this measures it.
 *
 * usage: pf-place-cost FILE [REPS]   (FILE: an existing file, e.g. in
 * /dev/shm, of the size to measure; its contents are overwritten)
 *
 * Each rep runs every method once, in turn, each on a fresh mapping;
 * prints the median and range of wall seconds per GiB for each. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "workers/wk_zero.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define BUF (256u << 10)
#define MAX_REPS 15

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint8_t *map(int fd, size_t n)
{
	uint8_t *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return m;
}

static void write_pwrite(int fd, size_t n, const uint8_t *buf)
{
	for (size_t o = 0; o < n; o += BUF)
		if (pwrite(fd, buf, BUF, (off_t)o) != (ssize_t)BUF) {
			perror("pwrite");
			exit(1);
		}
}

static void write_mapped(int fd, size_t n, const uint8_t *buf, int populate)
{
	uint8_t *m = map(fd, n);
	if (populate)
		(void)madvise(m, n, MADV_POPULATE_WRITE);
	for (size_t o = 0; o < n; o += BUF)
		memcpy(m + o, buf, BUF);
	munmap(m, n);
}

static size_t read_pread(int fd, size_t n, uint8_t *buf)
{
	size_t zero = 0;
	for (size_t o = 0; o < n; o += BUF) {
		if (pread(fd, buf, BUF, (off_t)o) != (ssize_t)BUF) {
			perror("pread");
			exit(1);
		}
		for (size_t p = 0; p < BUF; p += 4096)
			zero += wk_page_is_zero(buf + p, 4096);
	}
	return zero;
}

static size_t read_mapped(int fd, size_t n)
{
	uint8_t *m = map(fd, n);
	size_t zero = 0;
	for (size_t o = 0; o < n; o += 4096)
		zero += wk_page_is_zero(m + o, 4096);
	munmap(m, n);
	return zero;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pf-place-cost FILE [REPS]\n");
		return 2;
	}
	int reps = argc > 2 ? atoi(argv[2]) : 5;
	reps = reps < 1 ? 1 : reps > MAX_REPS ? MAX_REPS : reps;
	int fd = open(argv[1], O_RDWR);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	size_t n = (size_t)st.st_size / BUF * BUF;
	double gib = (double)n / (1 << 30);
	uint8_t *buf = aligned_alloc(4096, BUF);
	memset(buf, 0, BUF); /* zeros: the file reads as zeros after every write */
	static const char *const names[] = { "write: pwrite from a 256 KiB buffer",
					     "write: mapping, MADV_POPULATE_WRITE first",
					     "write: mapping, faulted page by page",
					     "read + zero check: pread into a 256 KiB buffer",
					     "read + zero check: mapping" };
	enum { N = sizeof(names) / sizeof(names[0]) };
	double t[N][MAX_REPS];
	size_t sink = 0;
	for (int r = 0; r < reps; r++)
		for (int k = 0; k < N; k++) {
			double t0 = now();
			switch (k) {
			case 0: write_pwrite(fd, n, buf); break;
			case 1: write_mapped(fd, n, buf, 1); break;
			case 2: write_mapped(fd, n, buf, 0); break;
			case 3: sink += read_pread(fd, n, buf); break;
			default: sink += read_mapped(fd, n); break;
			}
			t[k][r] = (now() - t0) / gib;
		}
	printf("%s, %.2f GiB, %d reps: seconds per GiB, median [min-max]\n", argv[1], gib, reps);
	for (int k = 0; k < N; k++) {
		qsort(t[k], (size_t)reps, sizeof(double), cmp);
		printf("  %-48s %.3f [%.3f-%.3f]\n", names[k], t[k][reps / 2], t[k][0], t[k][reps - 1]);
	}
	return sink == 0 ? 1 : 0; /* every page read was zero: sink counts them */
}
