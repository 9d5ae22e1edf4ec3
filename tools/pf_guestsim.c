/* pageferry-guestsim: a synthetic guest for trying live migration.  It owns
 * a RAM file and its dirty log (protocol/proto_dirtylog.h), rewrites pages
 * at a chosen rate in a chosen pattern, marks each one dirty the way a VMM
 * would, and obeys pause/resume and throttle requests.  When paused it writes
 * the CRC-32C of its whole RAM to the checksum file (the destination must
 * match it).
 *
 *   pageferry-guestsim run RAM LOG SIZE RATE_MIBS PATTERN CHECKSUM_FILE SEED
 *       PATTERN: uniform | hot:MIB | sweep
 *   pageferry-guestsim checksum FILE      print the CRC-32C of FILE
 *
 * Prints "ready" once both files exist, "paused crc32c=0x...", "resumed",
 * "lease lapsed" when it resumed on its own because pageferry stopped
 * renewing its pause lease, and "handed off" when the migration committed
 * (it then stays paused, as a source VMM must).
 * Ends on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "protocol/proto_crc32c.h"
#include "protocol/proto_dirtylog.h"

#define PAGE 4096u
#define TICK_NS 5000000L /* 5 ms */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "pageferry guestsim: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint8_t *map_new(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path);
	if (ftruncate(fd, (off_t)size) < 0)
		die("ftruncate");
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	close(fd);
	return p;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* New contents for a page: its index and a generation, so every rewrite
 * differs from the last; a quarter of the pages start out zero. */
static void write_page(uint8_t *page, uint64_t index, uint64_t generation)
{
	uint64_t *w = (uint64_t *)page;
	uint64_t v = index * 0x9e3779b97f4a7c15ull ^ generation;
	for (unsigned i = 0; i < PAGE / 8; i++)
		w[i] = v + i;
}

static uint32_t checksum_fd(int fd, uint64_t size)
{
	static uint8_t buf[1 << 20];
	uint32_t crc = 0;
	for (uint64_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("pread");
		crc = proto_crc32c(crc, buf, (size_t)n);
		off += (uint64_t)n;
	}
	return crc;
}

static void publish_checksum(const char *path, uint32_t crc)
{
	/* Atomically, by rename, for a reader that polls for the file; but
	 * never over something that is not a regular file (the default,
	 * /dev/null, would be replaced by one). */
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		FILE *f = fopen(path, "w");
		if (!f || fprintf(f, "0x%08x\n", crc) < 0 || fclose(f) != 0)
			die(path);
		return;
	}
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f || fprintf(f, "0x%08x\n", crc) < 0 || fclose(f) != 0 || rename(tmp, path) < 0)
		die(path);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The VMM's side of the pause lease (doc/vmm-interface.md): stay paused while
 * pageferry renews it; resume on our own once it stood still for lease_ms;
 * after a handoff, stay paused until we are told to end. */
static void wait_while_paused(_Atomic uint32_t *request, _Atomic uint32_t *beat, _Atomic uint32_t *lease_ms)
{
	uint32_t seen = atomic_load_explicit(beat, memory_order_relaxed);
	uint64_t seen_at = now_ms();
	int said_handed_off = 0;
	uint32_t r;
	while (!stop && (r = atomic_load_explicit(request, memory_order_acquire)) != PROTO_DIRTYLOG_RUN) {
		uint32_t b = atomic_load_explicit(beat, memory_order_relaxed);
		uint32_t lease = atomic_load_explicit(lease_ms, memory_order_relaxed);
		if (b != seen) {
			seen = b;
			seen_at = now_ms();
		} else if (r == PROTO_DIRTYLOG_PAUSED && now_ms() - seen_at > (lease ? lease : 5000u)) {
			uint32_t expected = PROTO_DIRTYLOG_PAUSED;
			if (atomic_compare_exchange_strong(request, &expected, PROTO_DIRTYLOG_RUN)) {
				printf("lease lapsed\n");
				fflush(stdout);
				return;
			}
		}
		if (r == PROTO_DIRTYLOG_HANDED_OFF && !said_handed_off) {
			said_handed_off = 1;
			printf("handed off\n");
			fflush(stdout);
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);
	if (*end == 'K')
		v <<= 10;
	else if (*end == 'M')
		v <<= 20;
	else if (*end == 'G')
		v <<= 30;
	return v;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "checksum") == 0) {
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0)
			die(argv[2]);
		printf("0x%08x\n", checksum_fd(fd, (uint64_t)st.st_size));
		return 0;
	}
	if (argc != 9 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "usage: pageferry-guestsim run RAM LOG SIZE RATE_MIBS uniform|hot:MIB|sweep "
				"CHECKSUM_FILE SEED | checksum FILE\n");
		return 2;
	}
	uint64_t size = parse_size(argv[4]);
	double rate = strtod(argv[5], NULL);
	const char *pattern = argv[6];
	uint64_t seed = strtoull(argv[8], NULL, 10) | 1;
	uint64_t pages = size / PAGE, hot = pages;
	if (size == 0 || size % PAGE || rate < 0) {
		fprintf(stderr, "pageferry guestsim: size must be a multiple of 4 KiB, rate >= 0\n");
		return 2;
	}
	if (strncmp(pattern, "hot:", 4) == 0) {
		hot = parse_size(argv[6] + 4) * (1 << 20) / PAGE;
		if (hot == 0 || hot > pages) {
			fprintf(stderr, "pageferry guestsim: hot set must be 1 MiB .. guest size\n");
			return 2;
		}
	} else if (strcmp(pattern, "uniform") != 0 && strcmp(pattern, "sweep") != 0) {
		fprintf(stderr, "pageferry guestsim: unknown pattern '%s'\n", pattern);
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	uint8_t *ram = map_new(argv[2], size);
	uint8_t *log = map_new(argv[3], proto_dirtylog_size(pages));
	proto_dirtylog_init(log, PAGE, pages);
	for (uint64_t p = 0; p < pages; p++)
		if (p % 4)
			write_page(ram + p * PAGE, p, 0);
	_Atomic uint64_t *bits = (_Atomic uint64_t *)(log + PROTO_DIRTYLOG_BITMAP_OFFSET);
	_Atomic uint32_t *request = (_Atomic uint32_t *)(log + PROTO_DIRTYLOG_PAUSE_REQUEST);
	_Atomic uint32_t *ack = (_Atomic uint32_t *)(log + PROTO_DIRTYLOG_PAUSE_ACK);
	_Atomic uint32_t *throttle = (_Atomic uint32_t *)(log + PROTO_DIRTYLOG_THROTTLE);
	_Atomic uint32_t *beat = (_Atomic uint32_t *)(log + PROTO_DIRTYLOG_LEASE_BEAT);
	_Atomic uint32_t *lease_ms = (_Atomic uint32_t *)(log + PROTO_DIRTYLOG_LEASE_MS);
	printf("ready\n");
	fflush(stdout);

	uint64_t generation = 1, sweep = 0;
	double owed = 0;
	while (!stop) {
		if (atomic_load_explicit(request, memory_order_acquire)) {
			/* Every write so far has its bit set: acknowledge, then (the RAM
			 * no longer changes) take the checksum. */
			atomic_store_explicit(ack, 1, memory_order_release);
			/* A real paused guest uses no CPU: take the checksum only with
			 * time nobody else wants, or it would slow the switchover it
			 * is meant to check. */
			struct sched_param idle = { 0 }, normal = { 0 };
			int idled = sched_setscheduler(0, SCHED_IDLE, &idle) == 0;
			int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				die(argv[2]);
			uint32_t crc = checksum_fd(fd, size);
			close(fd);
			if (idled)
				sched_setscheduler(0, SCHED_OTHER, &normal);
			publish_checksum(argv[7], crc);
			printf("paused crc32c=0x%08x\n", crc);
			fflush(stdout);
			wait_while_paused(request, beat, lease_ms);
			atomic_store_explicit(ack, 0, memory_order_release);
			if (!stop) {
				printf("resumed\n");
				fflush(stdout);
			}
			continue;
		}
		uint32_t t = atomic_load_explicit(throttle, memory_order_relaxed);
		owed += rate * (1 << 20) / PAGE * (TICK_NS / 1e9) * (100 - (t > 99 ? 99 : t)) / 100.0;
		for (; owed >= 1; owed--) {
			uint64_t p = strcmp(pattern, "sweep") == 0 ? sweep++ % pages : rng(&seed) % hot;
			write_page(ram + p * PAGE, p, generation++);
			atomic_fetch_or_explicit(&bits[p / 64], 1ull << (p % 64), memory_order_release);
		}
		struct timespec ts = { 0, TICK_NS };
		nanosleep(&ts, NULL);
	}
	return 0;
}
