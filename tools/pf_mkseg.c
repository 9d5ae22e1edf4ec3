/* pageferry-mkseg: formats the control segment for the supervisor, which
 * creates the memfd (so it owns it) and passes it here as fd 3.
 * argv: PAGE_SIZE N_WORKERS RING_SLOTS MAX_RUN_PAGES GUEST_PAGES */
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "shm/shm_segment.h"

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: pageferry-mkseg PAGE_SIZE N_WORKERS RING_SLOTS MAX_RUN_PAGES GUEST_PAGES\n");
		return 2;
	}
	struct shm_geometry g = {
		.page_size = (uint32_t)strtoul(argv[1], NULL, 10),
		.n_workers = (uint32_t)strtoul(argv[2], NULL, 10),
		.ring_slots = (uint32_t)strtoul(argv[3], NULL, 10),
		.max_run_pages = (uint32_t)strtoul(argv[4], NULL, 10),
		.guest_pages = strtoull(argv[5], NULL, 10),
	};
	int rc = shm_segment_format_fd(3, &g);
	if (rc < 0) {
		fprintf(stderr, "pageferry-mkseg: formatting the control segment: %s\n",
			rc == -EINVAL ? "invalid geometry" : strerror(-rc));
		return 1;
	}
	return 0;
}
