/* The destination's half of the handoff (doc/architecture.md, "The handoff").
 *
 * The receiver does not commit the copy itself: renaming it into place (or
 * removing the in-place marker) and syncing the directory cannot be done
 * from its sandbox.  So once every check has passed, the data is durable and
 * the sender said "commit", the receiver asks the front end on
 * RECEIVE_FD_COMMIT (stage/stage_fds.h) and waits; the front end commits and
 * says whether it did; the receiver tells the sender (inside TLS, which only
 * it can speak) and, once that answer is sent, tells the front end, which
 * undoes the commit when that word never comes.
 *
 * Receiver -> front end: "PFCOMMIT" (commit now), later "PFANSWER" (the
 * sender has been told of the commit).
 * Front end -> receiver: messages of DS_NOTICE_SIZE bytes,
 *   u8 kind; u8 0; u16 LE index, where kind is
 *   DS_NOTICE_DOWN: inflater `index` died (give it nothing new),
 *   DS_NOTICE_UP: its replacement runs (locked down),
 *   DS_DECISION_COMMITTED / DS_DECISION_FAILED (index 0): the front end's
 *   answer to PFCOMMIT.
 * Notices may still arrive after PFCOMMIT (the front end has not read it
 * yet): they are read and ignored then, the inflaters having finished.
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
#define DS_DECISION_COMMITTED 'C'
#define DS_DECISION_FAILED 'F'
#define DS_ANSWERED_MAGIC "PFANSWER"
#define DS_UNSENT_MAGIC "PFUNSENT"

/* A notice may arrive in pieces: what is read of the next one. */
struct ds_notices {
	uint8_t part[DS_NOTICE_SIZE];
	uint32_t fill;
};

/* Read, without blocking, the notices waiting on RECEIVE_FD_COMMIT and
 * apply each to live (the main thread only).  False once the front end
 * closed its end.  Dies on a malformed notice. */
bool ds_commit_read_notices(struct ds_notices *n, struct ds_live *live);

/* Ask the front end to commit (PFCOMMIT) and wait for its decision: true
 * when it committed.  Dies when the front end goes away. */
bool ds_commit_ask(struct ds_notices *n);
/* Tell the front end the sender has been told (PFANSWER), or die: after a
 * commit, so that it keeps it; after a failed one, so that it lets this
 * stage end before its own exit kills it (the sender's writer takes only a
 * well-formed refusal for "not committed"). */
void ds_commit_answered(void);
/* Tell the front end the answer could not be sent (PFUNSENT), so that it
 * undoes a commit the sender cannot know of.  Without either word (this
 * stage killed in between) the front end keeps the commit and says that
 * the sender may not know of it. */
void ds_commit_unsent(void);

#endif
