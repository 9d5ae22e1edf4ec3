/* The dirty log: how a VMM tells pageferry which guest pages it wrote, and
 * how the two agree on pausing the guest.  A file (memfd, /dev/shm) both map
 * MAP_SHARED; doc/vmm-interface.md is the VMM author's guide.  Version 2,
 * little-endian (the only byte order both ends share on one host anyway).
 *
 *  off  size  field            written by
 *    0   8    magic "PFDIRTY1"  VMM, once
 *    8   4    version (2)       VMM, once
 *   12   4    page_size         VMM, once (the guest RAM file's page size)
 *   16   8    n_pages           VMM, once (guest RAM size / page_size)
 *   24   8    bitmap_offset     VMM, once (4096)
 *   64   4    pause_request     pageferry: 1 = stop the vCPUs (while the lease
 *                               holds), 0 = run them, 2 = handed off: the
 *                               guest now lives on the destination, stay
 *                               stopped and never resume on a lapsed lease
 *  128   4    pause_ack         VMM: 1 once every vCPU is stopped and every
 *                               write before the stop has its bit set; 0 once
 *                               running again
 *  192   4    throttle_pct      pageferry: 0..99, share of time the VMM should
 *                               keep vCPUs from running (auto-converge)
 *  256   4    lease_beat        pageferry: bumped at least every 100 ms while
 *                               it works; with pause_request 1, a VMM that sees
 *                               it unchanged for lease_ms (its own clock)
 *                               stores pause_request 0 (compare-and-swap from
 *                               1) and resumes the guest by itself
 *  260   4    lease_ms          pageferry, before it asks for a pause
 * 4096        bitmap: ceil(n_pages / 64) 64-bit words; page i is bit i % 64
 *             of word i / 64.  The VMM sets bits with an atomic OR (seq-cst or
 *             release) after the write to the page; pageferry takes a word
 *             with an atomic exchange against 0 (acquire), so no bit is lost
 *             and a page written after its bit was taken is marked again.
 */
#ifndef PF_PROTO_DIRTYLOG_H
#define PF_PROTO_DIRTYLOG_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_error.h"

#define PROTO_DIRTYLOG_MAGIC 0x3159545249444650ull /* "PFDIRTY1" */
#define PROTO_DIRTYLOG_VERSION 2u
#define PROTO_DIRTYLOG_BITMAP_OFFSET 4096u
#define PROTO_DIRTYLOG_PAUSE_REQUEST 64u
#define PROTO_DIRTYLOG_PAUSE_ACK 128u
#define PROTO_DIRTYLOG_THROTTLE 192u
#define PROTO_DIRTYLOG_LEASE_BEAT 256u
#define PROTO_DIRTYLOG_LEASE_MS 260u

enum proto_dirtylog_pause {
	PROTO_DIRTYLOG_RUN = 0,
	PROTO_DIRTYLOG_PAUSED = 1,
	PROTO_DIRTYLOG_HANDED_OFF = 2,
};

static inline uint64_t proto_dirtylog_words(uint64_t n_pages)
{
	return (n_pages + 63) / 64;
}

static inline uint64_t proto_dirtylog_size(uint64_t n_pages)
{
	return PROTO_DIRTYLOG_BITMAP_OFFSET + proto_dirtylog_words(n_pages) * 8;
}

/* Write a fresh header (the VMM's job; guestsim and tests use it). */
void proto_dirtylog_init(uint8_t *base, uint32_t page_size, uint64_t n_pages);
/* Check a mapped log of file_size bytes against the guest's geometry. */
enum proto_err proto_dirtylog_check(const uint8_t *base, uint64_t file_size, uint32_t page_size,
				    uint64_t n_pages);

#endif
