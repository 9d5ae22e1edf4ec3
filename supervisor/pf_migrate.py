"""The network jobs: migrate (source, paused or live) and receive
(destination)."""
import os
import socket
import struct
import time

import pf_abi
import pf_commit
import pf_jobs
import pf_report
import pf_segment
import pf_source
import pf_stages
import pf_tls
from pf_jobs import JobError, Run
from pf_stages import wake_pair

# The supervisor's choice (at most pf_abi.MAX_RUN_BYTES): one packet's
# pages at most, 128 pages of 4 KiB.
MIGRATE_RUN_BYTES = 512 * 1024
TLS_TEXT = {"psk": "TLS 1.3 with a pre-shared key", "x509": "TLS 1.3 with X.509 certificates"}


def parse_target(to):
    if not to.startswith("tcp:") or ":" not in to[4:]:
        raise JobError(f"--to {to}: expected tcp:HOST:PORT", 2)
    return to[4:]


def parse_compress(text):
    """'none', 'zstd' or 'zstd:LEVEL' -> level (0 = none)."""
    if text == "none":
        return 0
    if text == "zstd":
        return 1
    if text.startswith("zstd:") and text[5:].isdigit() and 1 <= int(text[5:]) <= 19:
        return int(text[5:])
    raise JobError(f"--compress {text}: expected none, zstd or zstd:LEVEL with LEVEL 1..19", 2)


def round_records(seg, workers):
    out = []
    for r in range(1, pf_abi.MAX_ROUNDS + 1):
        rec = seg.round_record(workers, r)
        if not rec["done"]:
            break
        out.append({"round": r, "pages": rec["pages"], "bytes": rec["bytes"], "seconds": round(rec["usec"] / 1e6, 3),
                    "dirty_pages": rec["dirty_pages"], "mib_per_s": round(rec["bw"] / 2**20, 1),
                    "dirty_mib_per_s": round(rec["dirty_rate"] / 2**20, 1),
                    "expected_downtime_ms": (round(rec["expected_us"] / 1000, 1) if rec["expected_us"] < 2**63
                                             else None),
                    "throttle_pct": rec["throttle"]})
    return out


def migrate(ctx, guest, to, channels, compress, zerocopy, workers, psk_file, connect_timeout, live=None,
            io_timeout=30, insecure=False, tls_creds=None, take_device_state=None, finish=None, held_stopped=None):
    """take_device_state() (migrate --qmp): stops the guest and returns its
    VMM's device state (bytes), sent on the main channel; called once every
    channel is up and the receiver has taken the offer, and only then is the
    guest read (doc/qemu.md). finish(summary): called once the destination
    committed, before the summary is printed; held_stopped: as for
    pf_jobs.snapshot, called when the receiver is prepared, before the
    commit is decided."""
    hostport = parse_target(to)
    pf_tls.require_authentication("--to", hostport, psk_file or tls_creds, insecure, "the receiver")
    level = parse_compress(compress)
    guest_fd, size, page = pf_jobs.check_guest(guest)
    run = Run(ctx, "migrate", size)
    run.fds.append(guest_fd)
    ok = False
    log = None
    status = None
    try:
        if live:
            # Only a live migration needs these (and json, for the status file).
            import pf_dirtylog
            import pf_status
            log = pf_dirtylog.DirtyLog(live["dirty_log"], page, size // page, live["pause_lease"])
        tls, creds = pf_tls.credentials(run, psk_file, tls_creds, "client")
        run_pages = max(1, MIGRATE_RUN_BYTES // page)
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), page, workers, pf_jobs.RING_SLOTS, run_pages,
                                 size // page)
        run.fds.append(os.dup(seg.fd))
        p = run.pipeline
        commit_ours, commit_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        commit_fd = commit_ours.detach()
        run.fds.append(commit_fd)
        writer_fds = {pf_abi.fd("writer", "commit"): commit_theirs.fileno()}
        writer_args = ["--mode=migrate", f"--to={hostport}", f"--channels={channels}", f"--zerocopy={zerocopy}",
                       f"--connect-timeout-ms={int(connect_timeout * 1000)}",
                       f"--io-timeout-ms={int(io_timeout * 1000)}", f"--tls={tls}"]
        writer_args += pf_source.recheck_args(held_stopped)
        if creds is not None:
            writer_fds[pf_abi.fd("writer", "creds")] = creds
        if level:
            writer_args.append("--zstd")
        worker_args = [f"--zstd-level={level}"] if level else []
        state_fd = None
        if take_device_state is not None:
            state_fd = pf_source.device_state_fd(run, workers, writer_args, writer_fds)
        scanner_args, scanner_fds = [], {}
        if live:
            writer_args.append("--rounds")
            scanner_fds[pf_abi.fd("scanner", "dirty_log", n=workers)] = log.fd
            scanner_args = ["--live", f"--downtime-limit-ms={live['downtime_limit']}",
                            f"--max-bandwidth={int(live['max_bandwidth'] * 2**20)}",
                            f"--max-rounds={live['max_rounds']}", f"--pause-timeout-ms={live['pause_timeout']}"]
            if live["auto_converge"]:
                scanner_args.append("--auto-converge")
        let_scanner_go = pf_source.spawn_source(
            run, seg, guest_fd, workers, run_pages * page, writer_args, writer_fds,
            worker_args=worker_args,
            scanner_args=scanner_args, scanner_fds=scanner_fds, scanner_held=state_fd is not None)
        commit_theirs.close()

        def hand_over_state():
            """The writer is connected and waits for the state ('S'): stop
            the guest, take its state, then let the pipeline read it."""
            if os.fstat(state_fd).st_size:
                raise JobError("the writer asked for the device state twice")
            pf_source.fill_device_state(state_fd, take_device_state())
            let_scanner_go()
            try:
                os.write(commit_fd, b"G")
            except OSError:
                pass  # the writer ended meanwhile: the pipeline reports why

        p.watch_fd(commit_fd, lambda: on_writer(run, commit_fd, log, held_stopped,
                                                  hand_over_state if state_fd is not None else None))
        if live:
            status = pf_status.StatusFile()
        start = time.monotonic()

        def done():
            w = seg.stats(pf_abi.STATS_WRITER)
            if log:
                log.renew()
                if log.seen_paused:
                    pf_stages.test_hook("migrate:paused")
            if status:
                status.write(status_record(seg, workers, page, size, to, time.monotonic() - start))
            return (w["pages"] + seg.stats(pf_abi.STATS_SCANNER)["hole_pages"]) * page

        def on_cancel():
            seg.set_cancel()

        try:
            secs = run.watch(done, on_cancel=on_cancel if live else None)
        except JobError as e:
            if run.commit_granted and not destination_refused(run, commit_fd):
                if log:
                    log.hand_off()  # the VMM keeps it stopped, whatever the lease
                raise pf_jobs.OutcomeUnknown(str(e)) from None
            if log:
                log.resume()
                raise JobError(f"{e}; the guest keeps running on the source", e.exit_code)
            raise
        # The receiver answers success only once its copy is committed
        # (doc/architecture.md, "The handoff"): from here the guest lives
        # there, and the source's VMM must not resume it on a lapsed lease.
        if log:
            log.hand_off()
        sc, wr = seg.stats(pf_abi.STATS_SCANNER), seg.stats(pf_abi.STATS_WRITER)
        # Zero pages and compressed bytes as the writer took them: every
        # output once, a replaced worker's included (the workers' own counts
        # also hold the runs a worker checked and died before handing over,
        # which its replacement checks again). A zstd frame holds no zero
        # page: ZSTD_SPARSE's bitmap names them.
        zero = wr["zero_pages"]
        zc_on = bool(wr["flags"] & pf_abi.FLAG_ZEROCOPY)
        by_sendfile = bool(wr["flags"] & pf_abi.FLAG_SENDFILE)
        cpu = pf_report.pipeline_cpu(p)
        ok = True
        summary = {
            "command": "migrate", "guest": guest, "to": to, "channels": channels, "workers": workers,
            "compress": compress, "tls": tls, "page_size": page, "guest_bytes": size, "bytes_sent": wr["bytes"],
            "packets": wr["packets"],
            "pages": {"total": size // page, "zero": zero, "hole": sc["hole_pages"],
                      "normal": size // page - zero - sc["hole_pages"]},
            "compressed": {"in_bytes": wr["in_bytes"], "out_bytes": wr["out_bytes"]},
            "zerocopy": {"requested": zerocopy, "active": zc_on, "sendfile": by_sendfile,
                         "sendfile_bytes": wr["sendfile_bytes"], "sends": wr["zc_sends"],
                         "copied_by_kernel": wr["zc_copied"]},
            "seconds": round(secs, 3), "mib_per_s": round(size / pf_report.MiB / secs, 1),
            "sent_mib_per_s": round(wr["bytes"] / pf_report.MiB / secs, 1),
            "cpu_seconds": cpu,
            "cpu_seconds_per_gib": round(sum(cpu.values()) / (size / (1 << 30)), 3),
            "peak_anon_kib": run.sampler.peak_kib,
            "replacements": len(p.replacements), "replaced_stages": p.replacements,
            "unchanged_guest": pf_source.unchanged_guest(held_stopped, bool(live)),
        }
        if live:
            sc = seg.stats(pf_abi.STATS_SCANNER)
            rounds = round_records(seg, workers)
            summary["live"] = {
                "rounds": sc["round"], "downtime_ms": round((wr["event_us"] - sc["event_us"]) / 1000, 1),
                "downtime_limit_ms": live["downtime_limit"], "per_round": rounds,
                "bytes_per_guest_byte": round(wr["bytes"] / size, 3),
            }
        seg.close()
        if tls != "none":
            zc_text = None
        elif by_sendfile:
            zc_text = (f"sendfile, {wr['sendfile_bytes'] / pf_report.MiB:.0f} MiB spliced from the guest file "
                       f"(runs under {pf_abi.SENDFILE_MIN_BYTES // 1024} KiB copied)")
        elif zc_on:
            zc_text = f"on (MSG_ZEROCOPY), {wr['zc_copied']} of {wr['zc_sends']} sends copied by the kernel"
        else:
            zc_text = "off" + (" (the kernel refused sendfile and MSG_ZEROCOPY; guest pages copied)"
                               if zerocopy == "auto" else "")
        line = (f"migrate to {hostport}: {size / pf_report.MiB:.0f} MiB guest, {wr['bytes'] / pf_report.MiB:.0f} MiB "
                f"sent on {channels} channel(s) ({zero} zero, {sc['hole_pages']} hole pages not sent) in "
                f"{secs:.2f} s, {summary['mib_per_s']:.0f} MiB/s; "
                f"{TLS_TEXT[tls] if zc_text is None else 'not encrypted, zerocopy ' + zc_text}"
                f"{pf_report.replaced_text(p.replacements)}; the destination committed it")
        if live:
            lv = summary["live"]
            line += (f"; live: {lv['rounds']} rounds, downtime {lv['downtime_ms']:.0f} ms "
                     f"(limit {lv['downtime_limit_ms']} ms), {lv['bytes_per_guest_byte']:.2f} bytes sent per "
                     f"guest byte; the guest stays paused here, its RAM now lives on the destination")
        if finish:
            finish(summary)
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        if status:
            status.remove()
        if log:
            log.close()
        run.close(ok)


def on_writer(run, fd, log, held_stopped=None, hand_over_state=None):
    """A byte from the writer on the commit socket: 'S' (migrate --qmp, once,
    before any page: connected, ready for the device state) goes to
    hand_over_state; the writer reports the receiver prepared ('P'): every
    check passed there and the copy is durable. Commit only if the guest is
    still ours to hand over: not cancelled, (live) still paused under our
    lease, and (held_stopped) kept stopped by its VMM all along, which
    stands for the re-check. After a commit the writer says 'N' if the
    receiver answered that it did not commit; nothing else lets a failure
    resume the source."""
    said = os.read(fd, 1)
    if not said:
        run.pipeline.watched.pop(fd)  # the writer ended; the pipeline reports why
        return
    if said == b"S" and hand_over_state is not None:
        hand_over_state()
        return
    if run.commit_granted:
        run.destination_refused = run.destination_refused or said == b"N"
        return
    verdict = b"C"
    if run.cancel_requested or run.interrupted:
        verdict = b"A"
    elif log:
        log.renew()  # raises if the VMM took the guest back
        if log.seen_paused:  # the prepared answer may be what shows the pause first
            pf_stages.test_hook("migrate:paused")
    pf_stages.test_hook("migrate:before-commit")
    if verdict == b"C" and held_stopped:
        try:
            held_stopped()
        except JobError as e:
            run.refusal = str(e)
            verdict = b"A"
    os.write(fd, verdict)
    run.commit_granted = verdict == b"C"


def destination_refused(run, fd):
    """Whether the writer said 'N' before it ended (read here too: the
    pipeline may have seen the writer's exit before that byte)."""
    if not run.destination_refused:
        os.set_blocking(fd, False)
        try:
            run.destination_refused = os.read(fd, 1) == b"N"
        except (BlockingIOError, OSError):
            pass
    return run.destination_refused


def status_record(seg, workers, page, size, to, elapsed):
    sc, wr = seg.stats(pf_abi.STATS_SCANNER), seg.stats(pf_abi.STATS_WRITER)
    rounds = round_records(seg, workers)
    last = rounds[-1] if rounds else {}
    st = {"pid": os.getpid(), "to": to, "guest_bytes": size, "round": sc["round"],
          "transferred_bytes": wr["bytes"], "seconds": round(elapsed, 1),
          "mib_per_s": round(wr["bytes"] / 2**20 / max(elapsed, 1e-3), 1),
          "remaining_bytes": last.get("dirty_pages", size // page) * page,
          "dirty_mib_per_s": last.get("dirty_mib_per_s"),
          "expected_downtime_ms": last.get("expected_downtime_ms"),
          "throttle_pct": last.get("throttle_pct", 0)}
    return st


class InflaterNotices:
    """Tell the receive stage which inflaters may take new frames
    (dest/ds_commit.h, the notices; doc/architecture.md, "Replacing an
    inflater"): DOWN when one died, UP once its replacement has locked down
    and so takes from its ring again. Sent on our end of the commit socket,
    until the stage's handover is readable there."""

    def __init__(self, sock, seg, labels):
        self.sock, self.seg = sock, seg
        self.index = {label: i for i, label in enumerate(labels)}
        self.starting = set()  # replaced, not locked down yet
        self.stopped = False

    def on_replace(self, dead, new):
        i = self.index.get(dead.label)
        if i is None or new is not None:
            return
        block = pf_abi.STATS_WORKER0 + i
        if self.seg.stats(block)["state"] == pf_abi.PROC_DONE:
            return  # it took its END: nothing new goes to anyone
        # The block's owner is dead and its replacement not started: reset
        # here, so that LOCKED_DOWN is the replacement's word, not the dead one's.
        self.seg.set_stat(block, "state", pf_abi.PROC_STARTING)
        self.starting.add(i)
        self._send(pf_abi.NOTICE_DOWN, i)
        pf_stages.test_hook("receive:inflater-down")

    def poll(self):
        for i in sorted(self.starting):
            if self.seg.stats(pf_abi.STATS_WORKER0 + i)["state"] in (pf_abi.PROC_LOCKED_DOWN, pf_abi.PROC_DONE):
                self.starting.discard(i)
                self._send(pf_abi.NOTICE_UP, i)

    def _send(self, kind, i):
        if self.stopped:
            return
        try:
            self.sock.sendall(kind + b"\0" + struct.pack("<H", i))
        except OSError:
            self.stopped = True  # the stage is gone: the pipeline reports why


def receive(ctx, listen, into, workers, psk_file, accept_timeout, io_timeout=30, in_place=False, insecure=False,
            tls_creds=None, load_state=None, finish=None, zeroed=False):
    """load_state(bytes): receive --qmp: the sender must send a device
    state, which this is given once the RAM is whole and checked, as the
    last step before the commit (it refuses the commit by raising
    JobError); finish(summary): called once committed, before the summary
    is printed."""
    pf_tls.require_authentication("--listen", listen, psk_file or tls_creds, insecure, "this address")
    partial = into + pf_jobs.PARTIAL_SUFFIX
    run = Run(ctx, "receive", 1)
    ok = False
    marker = None
    try:
        tls, creds = pf_tls.credentials(run, psk_file, tls_creds, "server")
        if in_place:
            dest_fd, marker = pf_jobs.open_in_place(run, into, "--in-place")
        else:
            dest_fd = pf_jobs._open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, "create destination", 0o600)
            run.cleanup_paths.append(partial)
            run.fds.append(dest_fd)
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), pf_jobs.PAGE_4K, workers, pf_jobs.RING_SLOTS, 1, 1)
        run.fds.append(os.dup(seg.fd))
        arenas = [pf_stages.memfd(f"pageferry-inflate-{i}", pf_abi.ARENA_BUFFERS * pf_abi.DEST_BUFFER_BYTES)
                  for i in range(workers)]
        run.fds.extend(arenas)
        pairs = [wake_pair() for i in range(workers)]
        p = run.pipeline
        commit_ours, commit_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {pf_abi.fd("receive", "segment"): seg.fd, pf_abi.fd("receive", "dest"): dest_fd,
               pf_abi.fd("receive", "commit"): commit_theirs.fileno()}
        args = [f"--listen={listen}", f"--accept-timeout-ms={int(accept_timeout * 1000)}",
                f"--io-timeout-ms={int(io_timeout * 1000)}", f"--tls={tls}"]
        if creds is not None:
            fds[pf_abi.fd("receive", "creds")] = creds
        if in_place:
            args.append("--in-place")
            if zeroed:
                args.append("--zeroed")
        state_fd = None
        if load_state:
            state_fd = pf_stages.memfd("pageferry-device-state", 0)
            run.fds.append(state_fd)
            args.append("--device-state")
            fds[pf_abi.fd("receive", "state", 0, workers)] = state_fd
        for i in range(workers):
            fds[pf_abi.fd("receive", "ring", i)] = pairs[i][0].fileno()
            fds[pf_abi.fd("receive", "arena", i, workers)] = arenas[i]
        p.spawn("pageferry-receive", "pageferry-receive", args, fds)
        # An inflater that dies is replaced: it resumes from its ring
        # (doc/architecture.md, "Replacing an inflater").
        for i in range(workers):
            p.spawn(f"pageferry-inflater[{i}]", "pageferry-inflater",
                    [f"--index={i}"],
                    {pf_abi.fd("inflater", "segment"): seg.fd, pf_abi.fd("inflater", "dest"): dest_fd,
                     pf_abi.fd("inflater", "in"): pairs[i][1].fileno(),
                     pf_abi.fd("inflater", "arena"): arenas[i]}, restartable=True)
        for a, b in pairs:
            a.close()
            b.close()
        commit_theirs.close()
        committed = []
        notices = InflaterNotices(commit_ours, seg, [f"pageferry-inflater[{i}]" for i in range(workers)])
        p.on_replace = notices.on_replace
        progress = pf_jobs.pages_done(run, seg)

        def done():
            notices.poll()
            return progress()

        def on_handover():
            # Commit as soon as the receiver asks: the sender's guest is
            # paused until it hears the answer.
            p.watched.pop(commit_ours.fileno())
            notices.stopped = True
            if not commit_ours.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return  # the receiver died: the pipeline reports why
            prepare = None
            if load_state:
                def prepare():
                    load_state(os.pread(state_fd, os.fstat(state_fd).st_size, 0))
            pf_commit.commit(pf_commit.Handover(commit_ours), partial, into, marker, prepare)
            committed.append(True)

        p.watch_fd(commit_ours.fileno(), on_handover)
        try:
            secs = run.watch(done)
        except JobError:
            if not committed:
                raise
            secs = time.monotonic() - run.start  # a stage that failed after the commit changes nothing
        commit_ours.close()
        if not committed:
            raise JobError("the receiver ended without handing over its result")
        st = seg.stats(pf_abi.STATS_DEST)
        size = os.fstat(dest_fd).st_size
        ok = True
        summary = {
            "command": "receive", "listen": listen, "into": into, "in_place": in_place, "workers": workers,
            "tls": tls,
            "guest_bytes": size,
            "bytes_received": st["bytes"], "packets": st["packets"], "zero_pages": st["zero_pages"],
            "rerouted_frames": st["runs"],
            "seconds": round(secs, 3), "cpu_seconds": pf_report.pipeline_cpu(p),
            "peak_anon_kib": run.sampler.peak_kib,
            "replacements": len(p.replacements), "replaced_stages": p.replacements,
        }
        seg.close()
        line = (f"receive into {into}: {size / pf_report.MiB:.0f} MiB guest, {st['bytes'] / pf_report.MiB:.0f} MiB "
                f"received in {st['packets']} packets{pf_report.replaced_text(p.replacements)}, "
                f"{TLS_TEXT.get(tls, 'not encrypted')}; totals and checksums match")
        if finish:
            finish(summary)
        pf_report.emit_summary(summary, ctx.json, line)
    except JobError as e:
        if marker:
            e.args = (f"{e.args[0]}; {into} is incomplete (marked by {marker})",) + e.args[1:]
        raise
    finally:
        run.close(ok)
