/* What the checksums cost, measured apart from the pipeline (the product has
 * no switch to turn them off): over GUEST's pages, one core,
 *   scan     the workers' zero check alone (what a snapshot did before),
 *   scan+crc the zero check plus CRC-32C and fingerprint of every non-zero
 *            page (the workers' pass now; also the writer's end re-check),
 *   crc      CRC-32C of the non-zero pages alone (restore's and check's
 *            verification pass over data already in memory).
 * The guest is touched once first so that no pass pays its page faults.
 * Prints seconds and GiB/s of guest for each, best of REPS.
 *
 * usage: pf-crc-cost GUEST [REPS]
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "protocol/proto_crc32c.h"
#include "shm/shm_layout.h"
#include "workers/wk_zero.h"

#define PAGE 4096u

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint64_t sink;

static uint8_t *data_page; /* 1: the page is not zero (found once, before timing) */

static double pass(const uint8_t *g, uint64_t pages, int mode)
{
	double t = now();
	uint64_t acc = 0;
	for (uint64_t p = 0; p < pages; p++) {
		const uint8_t *pg = g + p * PAGE;
		if (mode == 2) { /* crc only, of pages known to hold data */
			if (data_page[p])
				acc += proto_crc32c(0, pg, PAGE);
			continue;
		}
		if (wk_page_is_zero(pg, PAGE))
			continue;
		acc++;
		if (mode == 1)
			acc ^= shm_fp_mix(p, proto_crc32c(0, pg, PAGE));
	}
	sink = acc;
	return now() - t;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pf-crc-cost GUEST [REPS]\n");
		return 2;
	}
	int reps = argc > 2 ? atoi(argv[2]) : 3;
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	uint64_t pages = (uint64_t)st.st_size / PAGE;
	const uint8_t *g = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (g == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	data_page = malloc(pages ? pages : 1);
	for (uint64_t p = 0; p < pages; p++)
		data_page[p] = !wk_page_is_zero(g + p * PAGE, PAGE);
	const char *names[] = { "scan", "scan+crc", "crc" };
	double gib = (double)pages * PAGE / (1u << 30);
	printf("{\"guest_gib\": %.3f", gib);
	for (int m = 0; m < 3; m++) {
		double best = 1e9;
		for (int r = 0; r < reps; r++) {
			double s = pass(g, pages, m);
			best = s < best ? s : best;
		}
		printf(", \"%s_s\": %.4f, \"%s_gib_s\": %.2f", names[m], best, names[m], gib / best);
	}
	printf("}\n");
	return 0;
}
