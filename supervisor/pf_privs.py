"""As whom the stages run (doc/security.md, "Least privilege").

Every stage drops its capabilities and switches to an unprivileged user
when it locks down (stage/stage_privs.c). The user is chosen here, once per
command: `--run-as USER[:GROUP]`, by default nobody with its primary group
(nogroup on Debian). It is resolved to numbers, since a stage never looks
names up, and pf_stages.Pipeline hands it to every stage it starts in the
environment variable pf_abi.RUN_AS_ENV, as UID:GID.

Decisions:
- Only root switches users (uid 0 with CAP_SETUID and CAP_SETGID): leaving
  uid 0 is what takes capabilities from every thread of a stage. Any other
  pageferry gives the stages its own uid and gid: they keep them and drop
  every capability first thing. Naming another user with --run-as is then an
  error, not a silent no-op.
- Root is never a target (uid 0 or gid 0): without capabilities, a process
  of uid 0 still owns root's files.
- A missing default user is an error that names --run-as; nothing falls
  back to running the stages as root.
"""
import grp
import os
import pwd

import pf_abi

DEFAULT_USER = "nobody"
CAP_SETGID, CAP_SETUID = 6, 7   # linux/capability.h

_ids = None   # (uid, gid) for this process's stages, once chosen


class Refused(RuntimeError):
    """The user asked for cannot run the stages; the message says why."""


def _effective_caps():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def can_switch_users():
    caps = _effective_caps()
    return os.geteuid() == 0 and bool(caps >> CAP_SETUID & 1 and caps >> CAP_SETGID & 1)


def _lookup(name, by_name, by_id, what):
    try:
        return by_name(name)
    except KeyError:
        pass
    if name.isdigit():
        try:
            return by_id(int(name))
        except KeyError:
            return None
    raise Refused(f"--run-as: there is no {what} '{name}' on this host")


def resolve(spec):
    """(uid, gid) for "USER[:GROUP]" (names or numbers), or for the default
    when spec is None."""
    if not can_switch_users():
        own = (os.geteuid(), os.getegid())
        if own[0] == 0:
            raise Refused("pageferry runs as root without CAP_SETUID and CAP_SETGID, so its stages "
                          "could not leave root: give it those capabilities, or run it as another user")
        if own[1] == 0:
            raise Refused("pageferry runs with group root (gid 0) and cannot switch groups, so its stages "
                          "could not leave it: run it with another group, or as root")
        if spec is not None and resolve_names(spec) != own:
            raise Refused(f"--run-as {spec}: pageferry does not run as root, so its stages keep its own user "
                          f"(uid {own[0]}, gid {own[1]}); run it as root to choose another")
        return own
    if spec is None:
        try:
            pw = pwd.getpwnam(DEFAULT_USER)
        except KeyError:
            raise Refused(f"there is no user '{DEFAULT_USER}' on this host to run the stages as: "
                          f"name an unprivileged one with --run-as USER[:GROUP]") from None
        return pw.pw_uid, pw.pw_gid
    return resolve_names(spec)


def resolve_names(spec):
    user, _, group = spec.partition(":")
    if not user or (":" in spec and not group):
        raise Refused(f"--run-as '{spec}': expected USER or USER:GROUP")
    pw = _lookup(user, pwd.getpwnam, pwd.getpwuid, "user")
    uid = pw.pw_uid if pw else int(user)
    if group:
        gr = _lookup(group, grp.getgrnam, grp.getgrgid, "group")
        gid = gr.gr_gid if gr else int(group)
    elif pw:
        gid = pw.pw_gid
    else:
        raise Refused(f"--run-as {spec}: uid {user} has no entry in the user database, so give its group "
                      f"too (--run-as {user}:GROUP)")
    if uid == 0 or gid == 0:
        raise Refused(f"--run-as {spec}: stages never run as root (uid 0 or gid 0): name an unprivileged user")
    if uid >= 2**32 - 1 or gid >= 2**32 - 1:
        raise Refused(f"--run-as {spec}: not a valid uid:gid")
    return uid, gid


def choose(spec):
    """Resolve spec (see resolve) for every stage this process starts."""
    global _ids
    _ids = resolve(spec)


def stage_env():
    """{RUN_AS_ENV: "UID:GID"} for a stage; the default user unless choose() ran."""
    if _ids is None:
        choose(None)
    return {pf_abi.RUN_AS_ENV: f"{_ids[0]}:{_ids[1]}"}
