/* Arena buffers: a memfd per worker, created by the supervisor, holding
 * WK_ARENA_BUFFERS buffers of one run's raw size each (buffer i at
 * i * buffer_size).  On the source a worker writes zstd frames into its
 * arena and the writer sends from it; on the destination the receiver
 * receives compressed payloads into it and the worker decompresses from it.
 * A buffer's index travels in the ring descriptor; its owner gets it back on
 * the return ring once the other side is done with it. */
#ifndef PF_WK_ARENA_H
#define PF_WK_ARENA_H

#include <stdint.h>

#include "protocol/proto_geometry.h"

#define WK_ARENA_BUFFERS 16u
/* A destination buffer holds one packet's payload, at most one run's raw
 * size (the receiver learns the run size only from the sender). */
#define WK_ARENA_DEST_BUFFER_SIZE PROTO_MAX_RUN_BYTES

static inline uint64_t wk_arena_size(uint64_t buffer_size)
{
	return WK_ARENA_BUFFERS * buffer_size;
}

#endif
