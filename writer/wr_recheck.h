/* The end-of-copy check that the guest did not change while it was copied
 * (without a dirty log nothing else would notice): the workers fingerprint
 * every data extent of the guest once more (shm_layout.h), chunk by chunk. */
#ifndef PF_WR_RECHECK_H
#define PF_WR_RECHECK_H

#include <stdint.h>

#include <stdbool.h>
#include <stdnoreturn.h>

#include "protocol/proto_desc.h"
#include "shm/shm_ring.h"
#include "shm/shm_segment.h"

/* The re-check of a finished copy, shared by the workers (their mappings
 * are warm, and there are several of them): every data extent of the guest
 * goes to them round-robin as RECHECK runs on the return rings, then
 * RECHECK_END; each fingerprints its runs into the same table once more and
 * answers RECHECKED.  A guest that did not change leaves every chunk 0:
 * returns 0; otherwise 1 with [*first, *last] the first chunk that changed.
 * Call it after every worker's END, once the copy is where it goes (data
 * written, or the receiver prepared).  With skip (a live migration, whose
 * dirty log covers a changing guest) it only releases the workers.  Ring
 * failures fail the stage. */
int wr_recheck_by_workers(const struct shm_segment *seg, struct shm_ring *in, struct shm_ring *back, bool skip,
			  uint64_t *first, uint64_t *last);

/* Fail the stage: "the guest changed while it was copied ...". */
noreturn void wr_recheck_changed(uint64_t first, uint64_t last);

/* Takes a worker's descriptor that will not be sent: applies its
 * fingerprints and gives its buffer back (writer_main.c). */
typedef void (*wr_recheck_drop_fn)(void *ctx, uint32_t worker, const struct proto_desc *d);

/* A paused migration's send failed: perhaps because the guest changed under
 * us (the receiver refuses a payload whose CRC no longer matches its pages)
 * and the user must hear that, not "Broken pipe".  Let the workers finish
 * (their descriptors are handed to drop; already_ended[i]: worker i's END
 * was taken already) for up to timeout_ms, then re-check
 * with them: fails the stage with the changed-guest line if so; returns
 * otherwise (also when the re-check had already passed), and the caller
 * reports its own failure. */
void wr_recheck_after_failure(const struct shm_segment *seg, struct shm_ring *in, struct shm_ring *back,
			      int timeout_ms, wr_recheck_drop_fn drop, void *ctx, const bool *already_ended);

#endif
