/* pageferry-verify A B: are two RAM files identical?  Names the first page
 * that differs.  Exit 0 equal, 1 different, 2 could not compare. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void *map_file(const char *path, uint64_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "pageferry verify: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "pageferry verify: fstat %s: %s\n", path, strerror(errno));
		exit(2);
	}
	*size = (uint64_t)st.st_size;
	void *p = NULL;
	if (*size) {
		p = mmap(NULL, *size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			fprintf(stderr, "pageferry verify: mmap %s: %s\n", path, strerror(errno));
			exit(2);
		}
		(void)madvise(p, *size, MADV_SEQUENTIAL);
	}
	close(fd);
	return p;
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
	const uint8_t *a = map_file(argv[1], &sa), *b = map_file(argv[2], &sb);
	if (sa != sb) {
		printf("different: %s is %llu bytes, %s is %llu bytes\n", argv[1], (unsigned long long)sa,
		       argv[2], (unsigned long long)sb);
		return 1;
	}
	const uint64_t chunk = 1u << 20;
	for (uint64_t off = 0; off < sa; off += chunk) {
		uint64_t n = sa - off < chunk ? sa - off : chunk;
		if (memcmp(a + off, b + off, n) == 0)
			continue;
		for (uint64_t p = off / page * page; p < off + n; p += page) {
			uint64_t m = sa - p < page ? sa - p : page;
			if (memcmp(a + p, b + p, m) != 0) {
				printf("different: first differing page %llu (offset %llu)\n",
				       (unsigned long long)(p / page), (unsigned long long)p);
				return 1;
			}
		}
	}
	printf("equal: %llu bytes, %llu pages\n", (unsigned long long)sa,
	       (unsigned long long)((sa + page - 1) / page));
	return 0;
}
