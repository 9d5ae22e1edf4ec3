/* The destination's half of the handoff (doc/architecture.md, "The handoff").
 *
 * The receiver does not tell the sender "done" itself: the copy is not
 * committed until the front end has renamed it into place (or removed the
 * in-place marker) and synced the directory, and a stage cannot do either
 * from its sandbox.  So once every check has passed and the data is durable,
 * the receiver hands the main channel (SCM_RIGHTS) and two ready-made
 * answers, success and failure, to the front end on RECEIVER_FD_COMMIT
 * (stage/stage_fds.h), and exits.
 * The front end commits, then sends one of them.  The answers are encoded
 * here, so the wire format stays in C.
 *
 * Message on RECEIVER_FD_COMMIT: "PFCOMMIT", u16 LE answer length N, the success
 * answer (N bytes), the failure answer (N bytes); the main channel's fd as
 * SCM_RIGHTS.
 */
#ifndef PF_RC_COMMIT_H
#define PF_RC_COMMIT_H

#define RC_COMMIT_MAGIC "PFCOMMIT"

/* Hand the main channel and the answers to the front end, or die. */
void rc_commit_handover(int main_fd);

#endif
