/* The snapshot file: a mapped-ram style layout.
 *
 *   [0, 4096)                      header (below), written through a buffered fd
 *   [4096, 4096 + bitmap_len)      bitmap: little-endian u64 words, bit i of
 *                                  word i/64 set = page i is stored in the file
 *   [extent_table_offset, + n_pages*16)
 *                                  extent table: one 16-byte record per extent
 *                                  of pages written (below), extent_count used;
 *                                  reserved for the worst case (every page its
 *                                  own extent), sparse beyond what is used
 *   [data_offset, + n_pages*page)  page i at data_offset + i * page_size,
 *                                  written with O_DIRECT; absent pages are holes
 *
 * Header fields (all little-endian):
 *    0  8  magic          "PGFERRY\x1a"
 *    8  4  version        PROTO_SNAP_VERSION
 *   12  4  state          1 WRITING, 2 COMPLETE (set only after data is durable)
 *   16  4  page_size      4096 or 2 MiB
 *   20  4  flags          PROTO_SNAP_F_DEVICE_STATE or 0
 *   24  8  guest_size     bytes
 *   32  8  n_pages        guest_size / page_size
 *   40  8  bitmap_offset  4096
 *   48  8  bitmap_len     ceil(n_pages / 64) * 8
 *   56  8  data_offset    multiple of 1 MiB, >= bitmap end
 *   64  8  pages_present  set bits in the bitmap
 *   72 16  snapshot_id    random
 *   88  4  bitmap_crc     crc32c of the bitmap bytes
 *   92  4  extent_crc     crc32c of the extent_count records, in file order
 *   96  8  extent_table_offset  bitmap end rounded up to 4096
 *  104  8  extent_count   records used, <= n_pages
 *  112  4  device_state_len   bytes of the VMM's device state (flag set:
 *                              1..PROTO_SNAP_STATE_MAX; else 0), stored at
 *                              data_offset + guest_size
 *  116  4  device_state_crc   crc32c of those bytes (else 0)
 *  120  4  reserved       0
 *  124  4  header_crc     crc32c of bytes 0..123
 *
 * Extent record (16 bytes): first_page u64, n_pages u32, crc32c u32 of the
 * extent's n_pages * page_size bytes of page data.  Extents are disjoint,
 * non-empty, inside the guest, cover only pages the bitmap has, and together
 * exactly pages_present pages: every stored page is covered by one checksum.
 */
#ifndef PF_PROTO_SNAPFILE_H
#define PF_PROTO_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_error.h"

#define PROTO_SNAP_VERSION 2u
#define PROTO_SNAP_EXTENT_SIZE 16u
#define PROTO_SNAP_TABLE_ALIGN 4096u
#define PROTO_SNAP_HEADER_SIZE 4096u
#define PROTO_SNAP_FIELDS_SIZE 128u
#define PROTO_SNAP_DATA_ALIGN (1u << 20)
/* The file carries a VMM's device state (snapshot --qmp: QEMU's migration
 * stream without the RAM it maps from the guest file), after the page data. */
#define PROTO_SNAP_F_DEVICE_STATE 1u
#define PROTO_SNAP_STATE_MAX (64u << 20)

enum proto_snap_state { PROTO_SNAP_WRITING = 1, PROTO_SNAP_COMPLETE = 2 };

struct proto_snap_header {
	uint32_t state;
	uint32_t page_size;
	uint64_t guest_size;
	uint64_t n_pages;
	uint64_t bitmap_offset;
	uint64_t bitmap_len;
	uint64_t data_offset;
	uint64_t pages_present;
	uint8_t snapshot_id[16];
	uint32_t bitmap_crc;
	uint32_t extent_crc;
	uint64_t extent_table_offset;
	uint64_t extent_count;
	uint32_t flags;
	uint32_t device_state_len;	/* 0: none */
	uint32_t device_state_crc;
};

/* Where the device state lies: right after the page data. */
static inline uint64_t proto_snap_state_offset(const struct proto_snap_header *h)
{
	return h->data_offset + h->guest_size;
}

struct proto_snap_extent {
	uint64_t first_page;
	uint32_t n_pages;
	uint32_t crc;
};

/* Fill in the derived fields (n_pages, offsets, bitmap length) for a guest.
 * Returns PROTO_E_PAGE_SIZE / PROTO_E_GUEST_SIZE for an unusable geometry. */
enum proto_err proto_snap_header_init(struct proto_snap_header *h, uint32_t page_size,
				      uint64_t guest_size);
/* Encode into the first PROTO_SNAP_FIELDS_SIZE bytes of out (the rest of
 * the 4 KiB header block is zero and the caller's to clear). */
void proto_snap_header_encode(const struct proto_snap_header *h, uint8_t out[PROTO_SNAP_FIELDS_SIZE]);
/* Decode and check every field; file_size is the snapshot's real size.
 * A WRITING snapshot is refused with PROTO_E_SNAP_INCOMPLETE. */
enum proto_err proto_snap_header_decode(const uint8_t *buf, size_t len, uint64_t file_size,
					struct proto_snap_header *out);
/* Check a bitmap read from the file against its decoded header: checksum,
 * no bits past the last page, and the present count. */
enum proto_err proto_snap_bitmap_check(const struct proto_snap_header *h, const uint8_t *bitmap,
				       size_t len);

void proto_snap_extent_encode(const struct proto_snap_extent *e, uint8_t out[PROTO_SNAP_EXTENT_SIZE]);
/* Decode one record, check it lies inside the guest and is not empty. */
enum proto_err proto_snap_extent_decode(const uint8_t in[PROTO_SNAP_EXTENT_SIZE], const struct proto_snap_header *h,
					struct proto_snap_extent *out);
/* Check a decoded extent against the (checked) bitmap and the pages of the
 * extents before it: `seen` is a zeroed array of h->bitmap_len bytes the
 * caller keeps for the whole table; the extent's pages are added to it. */
enum proto_err proto_snap_extent_claim(const struct proto_snap_header *h, const uint8_t *bitmap, uint8_t *seen,
				       const struct proto_snap_extent *e);
/* After the last record: every present page was claimed (total = the sum
 * of the extents' n_pages) and the records' CRC matches the header's. */
enum proto_err proto_snap_extents_end(const struct proto_snap_header *h, uint64_t total, uint32_t table_crc);

static inline int proto_bitmap_test(const uint8_t *bitmap, uint64_t page)
{
	return (bitmap[page >> 3] >> (page & 7)) & 1;
}

static inline void proto_bitmap_set(uint8_t *bitmap, uint64_t page)
{
	bitmap[page >> 3] |= (uint8_t)(1u << (page & 7));
}

#endif
