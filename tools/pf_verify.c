/* pageferry-verify A B: are two RAM files identical?  Names the first page
 * that differs.  Exit 0 equal, 1 different, 2 could not compare.
 * Chunks are a multiple of the page size (both powers of two), so pages
 * never straddle two. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* pread, not mmap: on tmpfs a read fault on a hole allocates the page, and
 * verifying a guest must not change how much memory it takes. */
static int open_file(const char *path, uint64_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "pageferry verify: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	*size = (uint64_t)st.st_size;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return fd;
}

static void read_full(int fd, const char *path, uint8_t *buf, uint64_t n, uint64_t off)
{
	while (n) {
		ssize_t got = pread(fd, buf, n, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			fprintf(stderr, "pageferry verify: reading %s at %llu: %s\n", path,
				(unsigned long long)off, got < 0 ? strerror(errno) : "unexpected end of file");
			exit(2);
		}
		buf += got;
		n -= (uint64_t)got;
		off += (uint64_t)got;
	}
}

int main(int argc, char **argv)
{
	uint64_t page = 4096;
	if (argc == 5 && strcmp(argv[1], "--page-size") == 0) {
		page = strtoull(argv[2], NULL, 10);
		argv += 2;
		argc -= 2;
	}
	if (argc != 3 || page == 0) {
		fprintf(stderr, "usage: pageferry verify [--page-size BYTES] A B\n");
		return 2;
	}
	uint64_t sa, sb;
	int fa = open_file(argv[1], &sa), fb = open_file(argv[2], &sb);
	if (sa != sb) {
		printf("different: %s is %llu bytes, %s is %llu bytes\n", argv[1], (unsigned long long)sa,
		       argv[2], (unsigned long long)sb);
		return 1;
	}
	const uint64_t chunk = page > (1u << 20) ? page : (1u << 20);
	uint8_t *a = malloc(chunk), *b = malloc(chunk);
	if (!a || !b) {
		fprintf(stderr, "pageferry verify: out of memory\n");
		return 2;
	}
	for (uint64_t off = 0; off < sa; off += chunk) {
		uint64_t n = sa - off < chunk ? sa - off : chunk;
		read_full(fa, argv[1], a, n, off);
		read_full(fb, argv[2], b, n, off);
		if (memcmp(a, b, n) == 0)
			continue;
		for (uint64_t p = 0; p < n; p += page) {
			uint64_t m = n - p < page ? n - p : page;
			if (memcmp(a + p, b + p, m) != 0) {
				printf("different: first differing page %llu (offset %llu)\n",
				       (unsigned long long)((off + p) / page), (unsigned long long)(off + p));
				return 1;
			}
		}
	}
	printf("equal: %llu bytes, %llu pages\n", (unsigned long long)sa,
	       (unsigned long long)((sa + page - 1) / page));
	return 0;
}
