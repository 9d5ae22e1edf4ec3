/* What both ends of a transfer must agree on before any page moves. */
#ifndef PF_PROTO_GEOMETRY_H
#define PF_PROTO_GEOMETRY_H

#include <stdint.h>

#define PROTO_PAGE_4K 4096u
#define PROTO_PAGE_2M (2u * 1024 * 1024)
#define PROTO_MAX_RUN_BYTES (4u * 1024 * 1024)	/* one packet's raw pages */
#define PROTO_MAX_GUEST_BYTES (UINT64_C(1) << 46)	/* 64 TiB */
#define PROTO_MAX_CHANNELS 64u

struct proto_geometry {
	uint32_t page_size;	/* 4 KiB or 2 MiB */
	uint32_t max_run_pages;	/* pages in one packet at most */
	uint64_t guest_pages;
};

static inline int proto_page_size_valid(uint32_t page_size)
{
	return page_size == PROTO_PAGE_4K || page_size == PROTO_PAGE_2M;
}

static inline int proto_run_limit_valid(uint32_t page_size, uint32_t max_run_pages)
{
	return max_run_pages >= 1 && (uint64_t)max_run_pages * page_size <= PROTO_MAX_RUN_BYTES &&
	       max_run_pages <= 4095;
}

static inline int proto_guest_pages_valid(uint32_t page_size, uint64_t guest_pages)
{
	return guest_pages >= 1 && guest_pages <= PROTO_MAX_GUEST_BYTES / page_size;
}

#endif
