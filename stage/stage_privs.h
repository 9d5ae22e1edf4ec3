/* Least privilege: as whom a stage runs once it has opened what it needs
 * (doc/security.md, "Least privilege").
 *
 * The front end resolves the user once (`--run-as`, default nobody) and
 * passes it to every stage as STAGE_RUN_AS_ENV=UID:GID (numeric: a stage
 * never looks names up).  A front end that cannot switch users (not root)
 * passes its own ids: the stage then keeps them and only drops its
 * capabilities.
 */
#ifndef PF_STAGE_PRIVS_H
#define PF_STAGE_PRIVS_H

#include "sandbox/sb_policy.h"

#define STAGE_RUN_AS_ENV "PAGEFERRY_RUN_AS"

/* First thing at start-up, while the stage has one thread: empty the sets
 * only exec could use (bounding, inheritable, ambient), and, unless the stage
 * runs as root (which stage_privs_drop leaves), every capability.  They are
 * per thread, so every thread started later inherits them empty. */
void stage_privs_begin(void);

/* At lock-down, before the seccomp filter: no supplementary groups, the
 * gid and uid of STAGE_RUN_AS_ENV (real, effective, saved; every thread),
 * no capability left; then checks every thread of the process.  Dies with
 * one line naming what failed.  The kernel clears PR_SET_PDEATHSIG when the
 * ids change: the caller arms it again. */
void stage_privs_drop(enum sb_role role);

#endif
