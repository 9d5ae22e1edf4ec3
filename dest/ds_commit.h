/* The destination's half of the handoff (doc/architecture.md, "The handoff").
 *
 * The receiver does not tell the sender "done" itself: the copy is not
 * committed until the front end has renamed it into place (or removed the
 * in-place marker) and synced the directory, and a stage cannot do either
 * from its sandbox.  So once every check has passed and the data is durable,
 * the receiver hands the main channel (SCM_RIGHTS) and two ready-made
 * answers, success and failure, to the front end on RECEIVE_FD_COMMIT
 * (stage/stage_fds.h), and exits.
 * The front end commits, then sends one of them.  The answers are encoded
 * here, so the wire format stays in C.
 *
 * Message on RECEIVE_FD_COMMIT: "PFCOMMIT", u16 LE answer length N, the success
 * answer (N bytes), the failure answer (N bytes); the main channel's fd as
 * SCM_RIGHTS.
 *
 * The other way, front end -> stage, the same socket carries notices about
 * the inflaters (dest/ds_live.h), DS_NOTICE_SIZE bytes each:
 *   u8 kind: DS_NOTICE_DOWN, inflater i died (give it nothing new), or
 *            DS_NOTICE_UP, its replacement runs (locked down);
 *   u8 0; u16 LE i (< the number of inflaters).
 * The stage's main thread reads them in its poll loop until every channel
 * ended, and discards whatever came after, unread, just before it hands
 * over; the front end stops sending once the handover is readable.  The
 * directions never mix, so the two formats cannot be confused.
 */
#ifndef PF_DS_COMMIT_H
#define PF_DS_COMMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "dest/ds_live.h"

#define DS_COMMIT_MAGIC "PFCOMMIT"
#define DS_NOTICE_SIZE 4
#define DS_NOTICE_DOWN 'D'
#define DS_NOTICE_UP 'U'

/* A notice may arrive in pieces: what is read of the next one. */
struct ds_notices {
	uint8_t part[DS_NOTICE_SIZE];
	uint32_t fill;
};

/* Read, without blocking, the notices waiting on RECEIVE_FD_COMMIT and
 * apply each to live (the main thread only).  False once the front end
 * closed its end.  Dies on a malformed notice. */
bool ds_commit_read_notices(struct ds_notices *n, struct ds_live *live);

/* Hand the main channel and the answers to the front end, or die. */
void ds_commit_handover(int main_fd);

#endif
