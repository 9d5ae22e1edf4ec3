"""snapshot --qmp and restore --qmp: pageferry drives a QEMU over QMP
(doc/qemu.md).  QEMU keeps guest RAM in a shared memory-backend-file;
pageferry moves that file and QEMU moves only its device state, with
x-ignore-shared leaving the file's RAM out of QEMU's stream.

Decisions:
- The guest is stopped before the device state is taken and the RAM is
  read, and resumed on any failure if it was running: a snapshot never
  leaves a running guest stopped.
- The capabilities the device state's trip needs (x-ignore-shared on,
  multifd and mapped-ram off) are set back to what they were once the state
  is taken: a later migration of this QEMU by other means would otherwise
  leave its RAM behind, or lose the user's settings.
- A stopped VM's RAM does not change (QEMU's own migration relies on it,
  and its device state's trip, which refuses a VM with a migration blocker,
  has just stopped the devices that could write it): so pageferry skips the
  re-read that proves a paused guest unchanged and checks instead, before
  the commit, that QEMU kept the VM stopped (kept_stopped): still stopped,
  no RESUME, WAKEUP or RESET event since the device state was taken.
- The destination gets its device state only once its RAM is whole, is
  never resumed unless QEMU reports the load completed, and a QEMU whose
  load failed is left as it is (it refuses a second incoming migration:
  the user restarts it).
- Everything QEMU says goes through pf_qmp, which checks it field by field.
"""
import os
import threading
import time

import pf_abi
import pf_jobs
import pf_qmp
import pf_stages
from pf_jobs import JobError

STATE_FD_NAME = "pageferry-state"
MIGRATE_TIMEOUT = 60.0  # the device state is a few hundred KiB


def guest_ram(qmp):
    """The mem-path of QEMU's one RAM backend, after checking it is a file
    pageferry can move; refusals name the backend and say what to use."""
    blocks = pf_qmp.ram_blocks(qmp)
    where = f"QEMU at {qmp.where}"
    if len(blocks) != 1:
        raise JobError(f"{where} has {len(blocks)} RAM backends ({', '.join(b['id'] for b in blocks)}): "
                       "pageferry moves a guest whose RAM is one memory-backend-file "
                       "(-machine memory-backend=ID)")
    b = blocks[0]
    if b["type"] != "memory-backend-file":
        raise JobError(f"{where}: RAM backend {b['id']} is {b['type']}, whose RAM pageferry cannot reach; "
                       f"use -object memory-backend-file,id={b['id']},share=on,mem-path=FILE")
    if not b["share"]:
        raise JobError(f"{where}: RAM backend {b['id']} has share=off: QEMU keeps its RAM private and would "
                       "move it itself; use share=on")
    if b["offset"]:
        raise JobError(f"{where}: RAM backend {b['id']} starts at offset {b['offset']} of {b['mem_path']}: "
                       "pageferry moves whole files (offset=0)")
    try:
        st = os.stat(b["mem_path"])
    except OSError as e:
        raise JobError(f"{where}: RAM backend {b['id']}: cannot stat {b['mem_path']}: {e.strerror}")
    if not os.path.isfile(b["mem_path"]) or st.st_size != b["size"]:
        raise JobError(f"{where}: RAM backend {b['id']}: {b['mem_path']} is not a regular file of "
                       f"{b['size']} bytes (mem-path must name the file itself)")
    return b["mem_path"]


def run_state(qmp):
    r = qmp.execute("query-status")
    if not isinstance(r, dict) or not isinstance(r.get("status"), str):
        raise JobError(f"QEMU at {qmp.where}: query-status: no status")
    return r["status"][:40]


# What the device state's trip through one pipe needs: the shared file's
# RAM left out, and no multi-channel or file-layout capability a user may
# have set for QEMU's own migrations (QEMU refuses an fd: URI with them).
STATE_CAPS = {"x-ignore-shared": True, "multifd": False, "mapped-ram": False}


def _set_caps(qmp, wanted):
    """Set these migration capabilities; returns the ones changed, as they
    were, for setting them back."""
    caps = qmp.execute("query-migrate-capabilities")
    now = {c["capability"]: c["state"] for c in (caps if isinstance(caps, list) else [])
           if isinstance(c, dict) and isinstance(c.get("capability"), str) and isinstance(c.get("state"), bool)}
    change = {k: v for k, v in wanted.items() if k in now and now[k] != v}
    if "x-ignore-shared" not in now:
        raise JobError(f"QEMU at {qmp.where} has no x-ignore-shared capability (QEMU 10 has)")
    if change:
        qmp.execute("migrate-set-capabilities",
                    capabilities=[{"capability": k, "state": v} for k, v in change.items()])
    return {k: now[k] for k in change}


def _pump(fn, what, errors):
    def run():
        try:
            fn()
        except OSError as e:
            errors.append(f"{what}: {e.strerror or e}")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _check_migration(qmp, what):
    r = pf_qmp.wait_migration(qmp, MIGRATE_TIMEOUT)
    if r["status"] != "completed":
        desc = r.get("error-desc") if isinstance(r.get("error-desc"), str) else ""
        raise JobError(f"QEMU at {qmp.where}: {what} {r['status'][:40]}{': ' + desc[:300] if desc else ''}")


def save_state(qmp):
    """QEMU's device state, without the RAM of shared file backends: a
    migration to a pipe we read to its end."""
    r, w = os.pipe2(os.O_CLOEXEC)
    chunks, errors = [], []

    def read_all():
        while True:
            b = os.read(r, 1 << 20)
            if not b:
                return
            chunks.append(b)
            if sum(map(len, chunks)) > pf_abi.SNAP_STATE_MAX:
                raise OSError(0, f"more than {pf_abi.SNAP_STATE_MAX} bytes")

    try:
        qmp.execute_args("getfd", {"fdname": STATE_FD_NAME}, fds=[w])
        os.close(w)
        w = -1
        t = _pump(read_all, "reading QEMU's device state", errors)
        qmp.execute("migrate", uri=f"fd:{STATE_FD_NAME}")
        _check_migration(qmp, "saving the device state:")
        t.join(MIGRATE_TIMEOUT)
        if t.is_alive() or errors:
            raise JobError(f"QEMU at {qmp.where}: " + (errors[0] if errors else "the device state never ended"))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    state = b"".join(chunks)
    if not state:
        raise JobError(f"QEMU at {qmp.where} saved an empty device state")
    return state


def load_state(qmp, state):
    """Feed the device state to a QEMU waiting with -incoming defer, and
    wait until it has loaded it (query-migrate completed, status paused).
    Its capabilities are set for the pipe and back once it has loaded."""
    was = _set_caps(qmp, STATE_CAPS)
    r, w = os.pipe2(os.O_CLOEXEC)
    errors = []

    def write_all():
        try:
            view = memoryview(state)
            while view:
                view = view[os.write(w, view):]
        finally:
            os.close(w)

    try:
        qmp.execute_args("getfd", {"fdname": STATE_FD_NAME}, fds=[r])
        os.close(r)
        r = -1
        t = _pump(write_all, "feeding QEMU the device state", errors)
        qmp.execute("migrate-incoming", uri=f"fd:{STATE_FD_NAME}", **{"exit-on-error": False})
        _check_migration(qmp, "loading the device state:")
        t.join(MIGRATE_TIMEOUT)
        if errors:
            raise JobError(f"QEMU at {qmp.where}: {errors[0]}")
    finally:
        if r >= 0:
            os.close(r)
    status = run_state(qmp)
    if status not in ("paused", "prelaunch"):  # prelaunch: a source that had never run
        raise JobError(f"QEMU at {qmp.where}: after loading the device state its status is {status}, not paused")
    _set_caps(qmp, was)


# Run states in which no vCPU runs and pageferry may move the VM: paused,
# after an outgoing migration (QEMU's or the device state's), or created
# with -S and never started.
STOPPED = ("paused", "postmigrate", "prelaunch")

# Events after which the RAM may not be what was read: vCPUs ran (RESUME,
# WAKEUP), or a reset loaded firmware and ROMs into it (RESET).
CHANGING_EVENTS = ("RESUME", "WAKEUP", "RESET")


def kept_stopped(qmp, mark):
    """A job's held_stopped for a VM stopped since QMP event `mark`: raises
    JobError unless QEMU still has it stopped and said nothing since that
    would have changed its RAM (another QMP client's cont, system_reset)."""
    try:
        status = run_state(qmp)  # also reads the events that came meanwhile
    except OSError as e:
        raise JobError(f"QEMU at {qmp.where}: {e.strerror or e}: cannot tell whether the VM stayed stopped "
                       "while its RAM was copied; nothing was committed")
    events = qmp.events_since(mark)
    if events is None:
        raise JobError(f"QEMU at {qmp.where} sent more than {pf_qmp.MAX_EVENTS} events while the RAM was copied: "
                       "cannot tell whether the VM stayed stopped; nothing was committed")
    changing = [e for e in events if e in CHANGING_EVENTS]
    if changing or status not in STOPPED:
        what = f"reported {changing[0]}" if changing else f"is {status}"
        raise JobError(f"the guest changed while it was copied: QEMU at {qmp.where} {what} meanwhile (another QMP "
                       "client?); nothing was committed")


def resume(qmp):
    qmp.execute("cont")
    qmp.wait_event("RESUME", timeout=10)


def _move(qmp_path, verb, job, resume_after):
    """Run job(ram_file, take_state, finish, held_stopped, guest_read) — the
    snapshot or the migration — on the guest behind qmp_path.  The job calls
    take_state() when it is ready to read the guest: it stops the guest
    and returns its device state; then held_stopped() before it commits
    (kept_stopped) and finish(summary) once its copy is committed.
    resume_after: resume a guest that was running as soon as every page is
    out of it (a snapshot: the job calls guest_read() then, its pages still
    being written) or leave it stopped (a migration: it runs on the
    destination now; guest_read is None).  On any failure before that, a
    guest that was stopped here is resumed."""
    with pf_qmp.QMP(qmp_path) as qmp:
        ram = guest_ram(qmp)
        status = run_state(qmp)
        if status != "running" and status not in STOPPED:
            raise JobError(f"QEMU at {qmp.where} is {status}: pageferry {verb}s a guest that runs or is paused")
        was_running = status == "running"
        stopped = resumed = None
        stopping = False
        done = False
        state_bytes = mark = None

        def take_state():
            nonlocal stopped, stopping, state_bytes, mark
            was = _set_caps(qmp, STATE_CAPS)
            try:
                if was_running:
                    stopping = True
                    qmp.execute("stop")
                    stopped = time.monotonic()
                    qmp.wait_event("STOP", timeout=10)
                state = save_state(qmp)
            finally:
                _set_caps(qmp, was)
            mark = qmp.n_events
            state_bytes = len(state)
            return state

        def resume_once():
            nonlocal resumed
            if was_running and resumed is None:
                resume(qmp)
                resumed = time.monotonic()

        def finish(summary):
            nonlocal done
            if resume_after:
                resume_once()
            done = True
            summary.update(qmp=qmp_path, device_state_bytes=state_bytes,
                           downtime_ms=round(((resumed or time.monotonic()) - stopped) * 1000) if stopped else None)

        try:
            job(ram, take_state, finish, lambda: kept_stopped(qmp, mark), resume_once if resume_after else None)
        except BaseException as e:
            # An unknown outcome keeps the guest stopped: the destination may run it.
            if stopping and not done and resumed is None and not isinstance(e, pf_jobs.OutcomeUnknown):
                try:
                    resume(qmp)
                except (JobError, OSError):
                    pass  # the first failure is the one to report
            raise


def snapshot(ctx, qmp_path, out, workers):
    _move(qmp_path, "snapshot", lambda ram, take_state, finish, held_stopped, guest_read: pf_jobs.snapshot(
        ctx, ram, out, workers, take_device_state=take_state, finish=finish, held_stopped=held_stopped,
        guest_read=guest_read), resume_after=True)


def migrate(ctx, qmp_path, migrate_job):
    """migrate_job(ram_file, take_device_state, finish, held_stopped):
    pf_migrate.migrate with the user's options, which stops the guest only
    once its channels are up.  The guest stays stopped here once the
    destination has committed: downtime_ms runs from the stop to that
    commit, which the destination's cont follows at once."""
    _move(qmp_path, "migrate", lambda ram, take_state, finish, held_stopped, _: migrate_job(
        ram, take_state, finish, held_stopped), resume_after=False)


def waiting_ram(qmp):
    """The RAM file of a QEMU waiting for an incoming migration."""
    status = run_state(qmp)
    if status != "inmigrate":
        raise JobError(f"QEMU at {qmp.where} is {status}, not waiting for a migration: start it with "
                       "-incoming defer (and the same command line as the guest's)")
    return guest_ram(qmp)


def receive(ctx, qmp_path, receive_job, resume_guest=True):
    """receive_job(ram_file, load_state, finish): pf_migrate.receive into
    QEMU's RAM file in place; load_state feeds QEMU the sender's device
    state as the last step before the commit."""
    with pf_qmp.QMP(qmp_path) as qmp:
        ram = waiting_ram(qmp)
        loaded = []

        def load(state):
            load_state(qmp, state)
            loaded.append(len(state))

        def finish(summary):
            if resume_guest:
                resume(qmp)
            summary.update(qmp=qmp_path, device_state_bytes=loaded[0], resumed=resume_guest)

        receive_job(ram, load, finish)


def restore(ctx, snap, qmp_path, workers, resume_guest=True, zeroed=False):
    """The restore stage checks SNAP's device state before it writes a page
    and hands it over with the RAM; QEMU loads it once the RAM is whole
    (the stage says so before it has ended)."""
    with pf_qmp.QMP(qmp_path) as qmp:
        ram = waiting_ram(qmp)
        state_fd = pf_stages.memfd("pageferry-device-state", 0)
        began = time.monotonic()
        loaded = {}

        def ram_complete():
            state = os.pread(state_fd, os.fstat(state_fd).st_size, 0)
            load_state(qmp, state)
            if resume_guest:
                resume(qmp)
            loaded.update(device_state_bytes=len(state), load_ms=round((time.monotonic() - began) * 1000))

        def finish(summary):
            summary.update(qmp=qmp_path, resumed=resume_guest, **loaded)

        try:
            pf_jobs.restore(ctx, snap, ram, workers, in_place=True, finish=finish, zeroed=zeroed,
                            device_state_fd=state_fd, ram_complete=ram_complete)
        finally:
            os.close(state_fd)
