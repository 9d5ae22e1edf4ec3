"""The jobs: snapshot and restore, each a pipeline of stage processes."""
import os
import signal
import stat
import time

import pf_abi
import pf_report
import pf_segment
import pf_source
import pf_stages

PAGE_4K = 4096
PAGE_2M = 2 * 1024 * 1024
RING_SLOTS = 1024
SNAP_RUN_PAGES = 256  # 1 MiB per descriptor at 4 KiB pages
PARTIAL_SUFFIX = ".pf-partial"  # a file being written; renamed away when committed
INCOMPLETE_SUFFIX = ".pf-incomplete"  # marks a file written in place until it is whole


class JobError(Exception):
    """A failure to report in one line; exit_code is the command's."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


OUTCOME_UNKNOWN_EXIT = 4


class OutcomeUnknown(JobError):
    """A migration that failed after the destination was told to commit,
    without its answer: it may hold the committed guest, so the source must
    not run it too (doc/architecture.md, "The handoff")."""

    def __init__(self, why):
        super().__init__(f"{why}; the destination was told to commit and its answer never came, so it may "
                         "hold the guest: the guest is left stopped here; resume it only once the destination "
                         "is known not to have committed it", OUTCOME_UNKNOWN_EXIT)


def _open(path, flags, what, mode=0o644):
    try:
        return os.open(path, flags | os.O_CLOEXEC, mode)
    except OSError as e:
        raise JobError(f"cannot {what} {path}: {e.strerror}")


def _open_direct(path, flags):
    """The data fd: O_DIRECT where the filesystem allows it (tmpfs may not)."""
    try:
        return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC), True
    except OSError as e:
        if e.errno != 22:  # EINVAL: no O_DIRECT on this filesystem
            raise JobError(f"cannot open {path} for direct I/O: {e.strerror}")
        return os.open(path, flags | os.O_CLOEXEC), False


def guest_page_size(path, fd):
    # hugetlbfs reports its huge page size as the block size.
    return PAGE_2M if os.fstatvfs(fd).f_bsize == PAGE_2M else PAGE_4K


def check_guest(path):
    fd = _open(path, os.O_RDONLY, "open guest")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise JobError(f"guest {path} is not a regular file")
    page = guest_page_size(path, fd)
    if st.st_size == 0:
        raise JobError(f"guest {path} is empty")
    if st.st_size % page:
        raise JobError(f"guest {path} is {st.st_size} bytes, not a multiple of its "
                       f"{page}-byte page size")
    return fd, st.st_size, page


def _fsync_dir(path):
    d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(d)
    finally:
        os.close(d)


class Run:
    """Runs a pipeline to completion: progress, signals, failure, cleanup."""

    def __init__(self, ctx, verb, total_bytes):
        self.ctx = ctx
        self.verb = verb
        self.pipeline = pf_stages.Pipeline(ctx.stage_dirs)
        self.progress = pf_report.Progress(verb, total_bytes, not ctx.json)
        self.sampler = pf_report.AnonSampler()
        self.cleanup_paths = []
        self.fds = []
        self.interrupted = None
        self.refusal = None  # the front end's own reason for calling the commit off
        self.commit_granted = False  # migrate: the writer was told to have the destination commit
        self.destination_refused = False  # ... and the receiver's answer said it did not
        self.start = time.monotonic()

    def _on_signal(self, signum, frame):
        self.interrupted = signum

    def _on_cancel(self, signum, frame):
        self.cancel_requested = True

    def watch(self, done_bytes, on_cancel=None):
        """on_cancel: called once on SIGUSR1 (`pageferry cancel`); the stages
        are then given 10 s to stop by themselves."""
        self.cancel_requested = False
        sigs = [signal.SIGINT, signal.SIGTERM]
        old = {s: signal.signal(s, self._on_signal) for s in sigs}
        if on_cancel:
            old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_cancel)
        cancel_deadline = None
        try:
            while self.pipeline.running():
                failed = self.pipeline.poll(0.1)
                self.sampler.sample([s.pid for s in self.pipeline.running()])
                if self.cancel_requested and cancel_deadline is None:
                    on_cancel()
                    cancel_deadline = time.monotonic() + 10
                if cancel_deadline and time.monotonic() > cancel_deadline:
                    self.interrupted = signal.SIGUSR1
                if failed or self.interrupted:
                    break
                self.progress.update(done_bytes())
            self.progress.update(done_bytes(), force=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.progress.finish()
        if self.interrupted or self.pipeline.root_cause():
            self.pipeline.kill_all(grace=0 if self.interrupted else 1.0)
            self.pipeline.drain()
            if self.cancel_requested:
                raise JobError("cancelled", 1)
            if self.interrupted:
                raise JobError(f"interrupted by {signal.Signals(self.interrupted).name}", 130)
            if self.refusal:
                raise JobError(self.refusal, 1)
            cause = self.pipeline.root_cause()
            code = 3 if os.WIFSIGNALED(cause.status) else 1
            why = cause.describe_failure()
            if cause.replaceable() and len(self.pipeline.replacements) >= pf_stages.MAX_REPLACEMENTS:
                why += (f", after {len(self.pipeline.replacements)} replacement(s), the most allowed "
                        f"({', '.join(self.pipeline.replacements)})")
            raise JobError(why, code)
        self.pipeline.drain()
        return time.monotonic() - self.start

    def close(self, success):
        # A failure found outside the watch loop (the commit, a lapsed lease)
        # must not leave stages running.
        if self.pipeline.running():
            self.pipeline.kill_all(grace=0)
        self.pipeline.close()
        for fd in self.fds:
            os.close(fd)
        if not success:
            for p in self.cleanup_paths:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


def pages_done(run, seg):
    """Progress for a destination stage that learns the page count as it goes
    (its stats block, STATS_DEST): the share of pages placed, scaled to the progress total."""
    def done():
        st = seg.stats(pf_abi.STATS_DEST)
        return run.progress.total * st["pages"] / max(st["total_pages"], 1)
    return done


def open_in_place(run, into, what):
    """A waiting VMM's existing RAM file (receive --in-place, restore --qmp),
    marked incomplete (FILE.pf-incomplete) until every check passed: it
    cannot be removed on failure as a partial file is. Returns (fd, marker)."""
    import pf_commit
    dest_fd = _open(into, os.O_RDWR, f"open destination ({what})")
    run.fds.append(dest_fd)
    st = os.fstat(dest_fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise JobError(f"{what}: {into} is not a regular file of the guest's size (it is "
                       f"{'empty' if stat.S_ISREG(st.st_mode) else 'not a regular file'})", 1)
    marker = into + INCOMPLETE_SUFFIX
    pf_commit.write_marker(marker, into)
    return dest_fd, marker


def snapshot(ctx, guest, out, workers, take_device_state=None, finish=None, held_stopped=None, guest_read=None):
    """take_device_state() (snapshot --qmp): stops the guest and returns its
    VMM's device state (bytes) to store in the snapshot; called once the
    snapshot file is made and the writer and workers are started, and only
    then is the guest read. finish(summary): called once the snapshot is
    committed, before the summary is printed;
    held_stopped(): raises JobError unless the guest's VMM kept it stopped
    all along; given, it replaces the final re-check of the guest and is
    called right before the commit (pf_source.recheck_args), or, with
    guest_read, once every page is out of the guest;
    guest_read() (with take_device_state and held_stopped): called then,
    after held_stopped() passed, while the pages are still being written
    (snapshot --qmp resumes the guest there)."""
    guest_fd, size, page = check_guest(guest)
    partial = out + PARTIAL_SUFFIX
    run = Run(ctx, "snapshot", size)
    run.fds.append(guest_fd)
    ok = False
    try:
        meta_fd = _open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, "create snapshot")
        run.cleanup_paths.append(partial)
        run.fds.append(meta_fd)
        data_fd, _ = _open_direct(partial, os.O_WRONLY)
        run.fds.append(data_fd)
        run_pages = max(1, min(SNAP_RUN_PAGES, pf_abi.MAX_RUN_BYTES // page))
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), page, workers, RING_SLOTS, run_pages,
                                 size // page)
        run.fds.append(os.dup(seg.fd))
        p = run.pipeline
        writer_args = ["--mode=snapshot"] + pf_source.recheck_args(held_stopped)
        writer_fds = {pf_abi.fd("writer", "meta"): meta_fd, pf_abi.fd("writer", "data"): data_fd}
        state_fd = state_bytes = notice = None
        if take_device_state is not None:
            state_fd = pf_source.device_state_fd(run, workers, writer_args, writer_fds)
            if guest_read is not None:
                # 'R' once every page is in the workers' arenas.
                notice, notice_w = pf_stages.word_pipe(run.fds, writer_args, "--guest-read-notice", writer_fds,
                                                       pf_abi.fd("writer", "guest_read", 0, workers))
        try:
            let_scanner_go = pf_source.spawn_source(run, seg, guest_fd, workers, run_pages * page, writer_args,
                                                    writer_fds, scanner_held=state_fd is not None)
        finally:
            if notice is not None:
                os.close(notice_w)  # the writer's now: its end of the pipe
        read_checked = []
        if notice is not None:
            def on_guest_read():
                pf_stages.test_hook("snapshot:guest-read")
                held_stopped()
                read_checked.append(True)
                guest_read()
            p.watch_word(notice, b"R", on_guest_read)
        if let_scanner_go:
            # The writer reads the state once the pages are written, which
            # they are only after the scanner has gone.
            state_bytes = pf_source.fill_device_state(state_fd, take_device_state())
            let_scanner_go()

        def done():
            w = seg.stats(pf_abi.STATS_WRITER)
            return (w["pages"] + seg.stats(pf_abi.STATS_SCANNER)["hole_pages"]) * page

        secs = run.watch(done)
        sc, wr = seg.stats(pf_abi.STATS_SCANNER), seg.stats(pf_abi.STATS_WRITER)
        zero = wr["zero_pages"]
        pf_stages.test_hook("snapshot:before-commit")
        if held_stopped and not read_checked:
            held_stopped()
        os.rename(partial, out)
        _fsync_dir(out)
        ok = True
        pf_stages.test_hook("snapshot:after-commit")
        n_pages = size // page
        summary = {
            "command": "snapshot", "guest": guest, "snapshot": out, "workers": workers,
            "page_size": page, "guest_bytes": size, "bytes_written": wr["bytes"],
            "pages": {"total": n_pages, "zero": zero, "normal": wr["bytes"] // page,
                      "hole": sc["hole_pages"]},
            "seconds": round(secs, 3), "mib_per_s": round(size / pf_report.MiB / secs, 1),
            "write_mib_per_s": round(wr["bytes"] / pf_report.MiB / secs, 1),
            "direct_io": bool(wr["flags"] & pf_abi.FLAG_DIRECT_IO),
            "cpu_seconds": pf_report.pipeline_cpu(p),
            "peak_rss_kib": pf_report.peak_rss_kib(p),
            "peak_anon_kib": run.sampler.peak_kib,
            "replacements": len(p.replacements), "replaced_stages": p.replacements,
            "unchanged_guest": pf_source.unchanged_guest(held_stopped, False),
        }
        if state_bytes is not None:
            summary["device_state_bytes"] = state_bytes
        seg.close()
        if finish:
            finish(summary)
        line = (f"snapshot {out}: {size / pf_report.MiB:.0f} MiB guest, {wr['bytes'] / pf_report.MiB:.0f} MiB "
                f"written ({zero} zero, {sc['hole_pages']} hole pages skipped) in {secs:.2f} s, "
                f"{summary['mib_per_s']:.0f} MiB/s, direct I/O {'on' if summary['direct_io'] else 'off'}"
                f"{pf_report.replaced_text(p.replacements)}")
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        run.close(ok)


def open_snapshot(ctx, verb, snap):
    """A Run that reads SNAP (restore, check): its progress total is the file's size."""
    meta_fd = _open(snap, os.O_RDONLY, "open snapshot")
    run = Run(ctx, verb, os.fstat(meta_fd).st_size)
    run.fds.append(meta_fd)
    return run, meta_fd


def spawn_snapshot_reader(ctx, run, snap, meta_fd, mode, workers, more_fds, more_args=()):
    """pageferry-restore in MODE (restore, check) reading SNAP: header, bitmap
    and extent table through meta_fd, page data through an O_DIRECT fd where
    the filesystem allows. Returns its (statistics-only) segment."""
    data_fd, _ = _open_direct(snap, os.O_RDONLY)
    run.fds.append(data_fd)
    seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), PAGE_4K, 1, 8, 1, 1)
    run.fds.append(os.dup(seg.fd))
    run.pipeline.spawn("pageferry-restore", "pageferry-restore",
                       [f"--mode={mode}", f"--threads={workers}"] + list(more_args),
                       {pf_abi.fd("restore", "segment"): seg.fd, pf_abi.fd("restore", "meta"): meta_fd,
                        pf_abi.fd("restore", "data"): data_fd, **more_fds})
    return seg


def _refuse_partial(snap):
    if snap.endswith(PARTIAL_SUFFIX):
        # Its header may already say COMPLETE (pageferry was killed between
        # the writer's last sync and the rename): only the rename commits it.
        raise JobError(f"{snap} is an unfinished snapshot (pageferry stopped before it committed it)")


def restore(ctx, snap, into, workers, in_place=False, finish=None, zeroed=False, device_state_fd=None,
            ram_complete=None):
    """in_place: INTO is an existing RAM file, written where it is (restore
    --in-place, --qmp), zeroed: one the user says reads as zeros;
    finish(summary): called once the RAM is restored and committed, before
    the summary is printed; device_state_fd (restore --qmp): an empty file
    the stage writes SNAP's device state to, checked, before it writes any
    page (a snapshot without one is refused there); ram_complete() (restore
    --qmp): called as soon as the stage says every page is written and
    synced, once committed, while the stage still tears down."""
    _refuse_partial(snap)
    run, meta_fd = open_snapshot(ctx, "restore", snap)
    partial = into + PARTIAL_SUFFIX
    ok = False
    marker = None
    try:
        if in_place:
            dest_fd, marker = open_in_place(run, into, "restore in place")
        else:
            dest_fd = _open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, "create destination", 0o600)
            run.cleanup_paths.append(partial)
            run.fds.append(dest_fd)
        fds, args = {pf_abi.fd("restore", "dest"): dest_fd}, []
        if in_place:
            args += ["--in-place"] + (["--zeroed"] if zeroed else [])
        if device_state_fd is not None:
            fds[pf_abi.fd("restore", "state")] = device_state_fd
            args.append("--device-state")
        notice = None
        if ram_complete is not None:
            notice, notice_w = pf_stages.word_pipe(run.fds, args, "--done-notice", fds, pf_abi.fd("restore", "done"))
        try:
            seg = spawn_snapshot_reader(ctx, run, snap, meta_fd, "restore", workers, fds, args)
        finally:
            if notice is not None:
                os.close(notice_w)  # the stage's now
        p = run.pipeline

        def commit():
            nonlocal ok
            pf_stages.test_hook("restore:before-commit")
            if in_place:
                os.unlink(marker)
            else:
                os.rename(partial, into)
            _fsync_dir(into)
            ok = True
            pf_stages.test_hook("restore:after-commit")

        if notice is not None:
            p.watch_word(notice, b"D", lambda: (commit(), ram_complete()))

        try:
            secs = run.watch(pages_done(run, seg))
        except JobError as e:
            if marker and seg.stats(pf_abi.STATS_DEST)["state"] == pf_abi.PROC_STARTING:
                # Refused before lock-down, before its readers wrote a page
                # (a bad header, no device state): FILE is as it was.
                os.unlink(marker)
            elif marker and not ok:
                e.args = (f"{e.args[0]}; {into} is incomplete (marked by {marker})",) + e.args[1:]
            raise
        st = seg.stats(pf_abi.STATS_DEST)
        size = os.fstat(dest_fd).st_size
        if not ok:
            commit()
        summary = {
            "command": "restore", "snapshot": snap, "into": into, "threads": workers,
            "guest_bytes": size, "bytes_read": st["bytes"], "seconds": round(secs, 3),
            "mib_per_s": round(size / pf_report.MiB / secs, 1),
            "read_mib_per_s": round(st["bytes"] / pf_report.MiB / secs, 1),
            "direct_io": bool(st["flags"] & pf_abi.FLAG_DIRECT_IO),
            "cpu_seconds": pf_report.pipeline_cpu(p),
            "peak_rss_kib": pf_report.peak_rss_kib(p),
            "peak_anon_kib": run.sampler.peak_kib,
        }
        seg.close()
        if finish:
            finish(summary)
        line = (f"restore {into}: {size / pf_report.MiB:.0f} MiB guest, {st['bytes'] / pf_report.MiB:.0f} MiB "
                f"read in {secs:.2f} s, {summary['mib_per_s']:.0f} MiB/s, direct I/O "
                f"{'on' if summary['direct_io'] else 'off'}")
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        run.close(ok)
