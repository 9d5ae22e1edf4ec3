/* pageferry-mkguest: synthetic guest RAM images for demos, tests and
 * benchmarks.  Deterministic for a given seed.
 *
 *   zero    every page written with zeros (allocated, zero by content)
 *   random  incompressible bytes
 *   text    English-like words (compresses about 3-4x)
 *   mixed   per page, scattered: 50% zero, 30% text, 20% random
 *   sparse  a hole-filled file with 8 written regions of 1 MiB
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u

static uint64_t rng_state;

static uint64_t next_rand(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = next_rand();
		memcpy(p + i, &v, 8);
	}
}

static const char *const words[] = { "the ", "guest ", "memory ", "page ", "moves ", "across ", "a ",
				      "network ", "while ", "virtual ", "machine ", "keeps ", "running ",
				      "and ", "every ", "byte ", "arrives ", "intact. ", "kernel ", "data " };

static void fill_text(uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		const char *w = words[next_rand() % (sizeof(words) / sizeof(words[0]))];
		size_t l = strlen(w);
		if (l > n - i)
			l = n - i;
		memcpy(p + i, w, l);
		i += l;
	}
}

/* Which kind a page of a mixed image is: a hash of its index, so scattered. */
static int mixed_kind(uint64_t page)
{
	uint64_t h = (page + 1) * 0x9e3779b97f4a7c15ull;
	h ^= h >> 31;
	unsigned pct = (unsigned)(h % 100);
	return pct < 50 ? 0 : pct < 80 ? 1 : 2;
}

static void die(const char *what)
{
	fprintf(stderr, "pageferry mkguest: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);
	switch (*end) {
	case 'G': v <<= 30; break;
	case 'M': v <<= 20; break;
	case 'K': v <<= 10; break;
	case 0: break;
	default: v = 0;
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: pageferry mkguest zero|random|text|mixed|sparse SIZE[K|M|G] FILE [SEED]\n");
		return 2;
	}
	const char *pattern = argv[1];
	uint64_t size = parse_size(argv[2]);
	rng_state = argc == 5 ? strtoull(argv[4], NULL, 10) | 1 : 0x2545F4914F6CDD1Dull;
	if (size == 0 || size % PAGE) {
		fprintf(stderr, "pageferry mkguest: size must be a non-zero multiple of %u\n", PAGE);
		return 2;
	}
	int fd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(argv[3]);
	if (ftruncate(fd, (off_t)size) < 0)
		die("ftruncate");
	const size_t chunk = 1u << 20;
	/* Through a shared mapping, not write(): hugetlbfs files can only be
	 * filled that way. */
	uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (ram == MAP_FAILED)
		die("mmap");
	if (strcmp(pattern, "sparse") == 0) {
		for (int r = 0; r < 8; r++) {
			uint64_t off = (size / 8) * (uint64_t)r + (size / 16) / chunk * chunk;
			uint64_t n = size - off < chunk ? size - off : chunk;
			fill_random(ram + off, n);
		}
	} else {
		for (uint64_t off = 0; off < size; off += chunk) {
			size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
			uint8_t *buf = ram + off;
			if (strcmp(pattern, "zero") == 0) {
				/* a written zero page, unlike a hole */
				memset(buf, 0, n);
			} else if (strcmp(pattern, "random") == 0) {
				fill_random(buf, n);
			} else if (strcmp(pattern, "text") == 0) {
				fill_text(buf, n);
			} else if (strcmp(pattern, "mixed") == 0) {
				for (size_t p = 0; p < n; p += PAGE) {
					int kind = mixed_kind((off + p) / PAGE);
					if (kind == 0)
						memset(buf + p, 0, PAGE);
					else if (kind == 1)
						fill_text(buf + p, PAGE);
					else
						fill_random(buf + p, PAGE);
				}
			} else {
				fprintf(stderr, "pageferry mkguest: unknown pattern '%s'\n", pattern);
				unlink(argv[3]);
				return 2;
			}
		}
	}
	if (munmap(ram, size) < 0)
		die("munmap");
	if (close(fd) < 0)
		die("close");
	return 0;
}
