"""The source pipeline: scanner -> workers -> writer, for snapshot and migrate."""
import os

import pf_abi
from pf_stages import memfd, wake_pair


def device_state_fd(run, workers, writer_args, writer_fds):
    """The writer stores (snapshot) or sends (migrate) a VMM's device state:
    an empty memfd on the fd stage/stage_fds.h gives it, for the caller to
    write the state into (a migration's writer reads it only when told)."""
    state_fd = memfd("pageferry-device-state", 0)
    run.fds.append(state_fd)
    writer_args.append("--device-state")
    writer_fds[pf_abi.fd("writer", "state", 0, workers)] = state_fd
    return state_fd


def fill_device_state(state_fd, state):
    """The state into the writer's memfd, whole; returns its length."""
    done = 0
    while done < len(state):
        done += os.pwrite(state_fd, state[done:], done)
    return done


def recheck_args(held_stopped):
    """The writer re-reads the guest after the copy to prove it did not
    change (doc/architecture.md, "A guest that changes while it is copied"),
    unless the front end can vouch for that itself (held_stopped)."""
    return ["--guest-held-stopped"] if held_stopped else []


def unchanged_guest(held_stopped, live):
    """The summary's word on how a committed copy is known to be the
    guest's memory at one moment."""
    if live:
        return "dirty-log"
    return "qemu-kept-it-stopped" if held_stopped else "re-read"


def spawn_source(run, seg, guest_fd, workers, run_bytes, writer_args, writer_fds, worker_args=None,
                 scanner_args=(), scanner_fds=None, scanner_held=False):
    """Start the source pipeline: scanner -> workers -> writer, wired by
    their rings' wake sockets on the fds of stage/stage_fds.h (pf_abi.fd),
    each worker with its arena of buffers for runs of run_bytes.
    writer_fds / scanner_fds: role-specific fds, {fd number: fd we hold};
    worker_args: extra named args for every worker. Workers are replaced
    when they die (pf_stages.Pipeline.spawn, restartable).
    scanner_held: the scanner, which would read the guest at once, is
    started held (--held: ready, locked down, waiting on a pipe): returns
    the function that lets it go (snapshot and migrate --qmp, once the
    guest is stopped); else returns None. The time until then costs the
    guest nothing, so workers and writer fault the arenas in meanwhile
    (--populate-arena) rather than in the downtime."""
    pipeline = run.pipeline
    if scanner_held:
        writer_args = list(writer_args) + ["--populate-arena"]
        worker_args = list(worker_args or []) + ["--populate-arena"]
    pairs = {(k, i): wake_pair() for k in range(3) for i in range(workers)}
    arenas = [memfd(f"pageferry-arena-{i}", pf_abi.source_arena_bytes(run_bytes)) for i in range(workers)]
    run.fds.extend(arenas)
    fds = {pf_abi.fd("writer", "segment"): seg.fd, pf_abi.fd("writer", "guest"): guest_fd, **writer_fds}
    for i in range(workers):
        fds[pf_abi.fd("writer", "ring_in", i)] = pairs[(1, i)][1].fileno()
        fds[pf_abi.fd("writer", "ring_back", i)] = pairs[(2, i)][0].fileno()
        fds[pf_abi.fd("writer", "arena", i, workers)] = arenas[i]
    pipeline.spawn("pageferry-writer", "pageferry-writer", writer_args, fds)
    for i in range(workers):
        pipeline.spawn(f"pageferry-worker[{i}]", "pageferry-worker", [f"--index={i}"] + list(worker_args or []),
                       {pf_abi.fd("worker", "segment"): seg.fd, pf_abi.fd("worker", "guest"): guest_fd,
                        pf_abi.fd("worker", "in"): pairs[(0, i)][1].fileno(),
                        pf_abi.fd("worker", "out"): pairs[(1, i)][0].fileno(),
                        pf_abi.fd("worker", "back"): pairs[(2, i)][1].fileno(),
                        pf_abi.fd("worker", "arena"): arenas[i]}, restartable=True)
    fds = {pf_abi.fd("scanner", "segment"): seg.fd, pf_abi.fd("scanner", "guest"): guest_fd,
           **(scanner_fds or {})}
    fds.update({pf_abi.fd("scanner", "ring", i): pairs[(0, i)][0].fileno() for i in range(workers)})
    go = None
    if scanner_held:
        go_r, go = os.pipe2(os.O_CLOEXEC)
        fds[pf_abi.fd("scanner", "go", n=workers)] = go_r
    try:
        held = ["--held"] if go is not None else []
        pipeline.spawn("pageferry-scanner", "pageferry-scanner", list(scanner_args) + held, fds)
    finally:
        if go is not None:
            os.close(go_r)
            run.fds.append(go)
    # Our copies must go, or a dead stage's peer would never see it hang up
    # (the pipeline keeps the workers' own ends: they are replaced instead).
    for a, b in pairs.values():
        a.close()
        b.close()
    if go is None:
        return None

    def let_scanner_go():
        try:
            os.write(go, b"G")
        except OSError:
            pass  # the scanner ended: the pipeline reports why
    return let_scanner_go
