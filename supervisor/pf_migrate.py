"""The network jobs: migrate (source) and receive (destination)."""
import os

import pf_jobs
import pf_report
import pf_segment
from pf_jobs import JobError, Run
from pf_stages import wake_pair

MIGRATE_RUN_BYTES = 512 * 1024   # one packet's pages at most (128 pages of 4 KiB)
ARENA_BUFFERS = 16               # workers/wk_arena.h
RECEIVE_BUFFER_BYTES = 4 << 20   # receiver/rc_net.h: RC_ARENA_BUFFER_SIZE


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


def _arena(name, size):
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def _psk_fd(run, psk_file):
    if not psk_file:
        return None
    fd = pf_jobs._open(psk_file, os.O_RDONLY, "open pre-shared key file")
    run.fds.append(fd)
    return fd


def migrate(ctx, guest, to, channels, compress, zerocopy, workers, psk_file, connect_timeout):
    hostport = parse_target(to)
    level = parse_compress(compress)
    guest_fd, size, page = pf_jobs.check_guest(guest)
    run = Run(ctx, "migrate", size)
    run.fds.append(guest_fd)
    ok = False
    try:
        psk = _psk_fd(run, psk_file)
        run_pages = max(1, MIGRATE_RUN_BYTES // page)
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), page, workers, pf_jobs.RING_SLOTS, run_pages,
                                 size // page)
        run.fds.append(os.dup(seg.fd))
        arenas = []
        if level:
            arenas = [_arena(f"pageferry-arena-{i}", ARENA_BUFFERS * run_pages * page) for i in range(workers)]
            run.fds.extend(arenas)
        pairs = {(k, i): wake_pair() for k in range(3) for i in range(workers)}
        p = run.pipeline
        writer_fds = {3: seg.fd, 4: guest_fd}
        if psk is not None:
            writer_fds[5] = psk
        for i in range(workers):
            writer_fds[7 + 2 * i] = pairs[(1, i)][1].fileno()
            writer_fds[8 + 2 * i] = pairs[(2, i)][0].fileno()
        for i, a in enumerate(arenas):
            writer_fds[7 + 2 * workers + i] = a
        p.spawn("pageferry-writer", "pageferry-writer",
                ["migrate", hostport, channels, zerocopy, int(psk is not None), int(bool(level)),
                 int(connect_timeout * 1000)], writer_fds)
        for i in range(workers):
            fds = {3: seg.fd, 4: guest_fd, 5: pairs[(0, i)][1].fileno(), 6: pairs[(1, i)][0].fileno(),
                   7: pairs[(2, i)][1].fileno()}
            args = [i]
            if level:
                fds[8] = arenas[i]
                args += ["zstd", level]
            p.spawn(f"pageferry-worker[{i}]", "pageferry-worker", args, fds)
        scanner_fds = {3: seg.fd, 4: guest_fd}
        scanner_fds.update({5 + i: pairs[(0, i)][0].fileno() for i in range(workers)})
        p.spawn("pageferry-scanner", "pageferry-scanner", [], scanner_fds)
        for a, b in pairs.values():
            a.close()
            b.close()

        def done():
            w = seg.stats(pf_segment.STATS_WRITER)
            return (w["pages"] + seg.stats(pf_segment.STATS_SCANNER)["hole_pages"]) * page

        secs = run.watch(done)
        sc, wr = seg.stats(pf_segment.STATS_SCANNER), seg.stats(pf_segment.STATS_WRITER)
        wk = [seg.stats(pf_segment.STATS_WORKER0 + i) for i in range(workers)]
        zero = sum(s["zero_pages"] for s in wk)
        zc_on = bool(wr["flags"] & pf_segment.FLAG_ZEROCOPY)
        cpu = pf_report.pipeline_cpu(p)
        ok = True
        summary = {
            "command": "migrate", "guest": guest, "to": to, "channels": channels, "workers": workers,
            "compress": compress, "page_size": page, "guest_bytes": size, "bytes_sent": wr["bytes"],
            "packets": wr["packets"],
            "pages": {"total": size // page, "zero": zero, "hole": sc["hole_pages"],
                      "normal": size // page - zero - sc["hole_pages"]},
            "compressed": {"in_bytes": sum(s["in_bytes"] for s in wk), "out_bytes": sum(s["out_bytes"] for s in wk)},
            "zerocopy": {"requested": zerocopy, "active": zc_on, "sends": wr["zc_sends"],
                         "copied_by_kernel": wr["zc_copied"]},
            "seconds": round(secs, 3), "mib_per_s": round(size / pf_report.MiB / secs, 1),
            "sent_mib_per_s": round(wr["bytes"] / pf_report.MiB / secs, 1),
            "cpu_seconds": cpu,
            "cpu_seconds_per_gib": round(sum(cpu.values()) / (size / (1 << 30)), 3),
            "peak_anon_kib": run.sampler.peak_kib,
        }
        seg.close()
        zc_text = ("on" if zc_on else "off") + (f", {wr['zc_copied']} of {wr['zc_sends']} sends copied by the kernel"
                                                 if zc_on else (" (the kernel refused it; fell back to copying)"
                                                                if zerocopy == "auto" else ""))
        line = (f"migrate to {hostport}: {size / pf_report.MiB:.0f} MiB guest, {wr['bytes'] / pf_report.MiB:.0f} MiB "
                f"sent on {channels} channel(s) ({zero} zero, {sc['hole_pages']} hole pages not sent) in "
                f"{secs:.2f} s, {summary['mib_per_s']:.0f} MiB/s; zerocopy {zc_text}; receiver confirmed")
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        run.close(ok)


def receive(ctx, listen, into, workers, psk_file, accept_timeout):
    partial = into + ".pf-partial"
    run = Run(ctx, "receive", 1)
    ok = False
    try:
        psk = _psk_fd(run, psk_file)
        dest_fd = pf_jobs._open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, "create destination", 0o600)
        run.cleanup_paths.append(partial)
        run.fds.append(dest_fd)
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), pf_jobs.PAGE_4K, workers, pf_jobs.RING_SLOTS, 1, 1)
        run.fds.append(os.dup(seg.fd))
        arenas = [_arena(f"pageferry-inflate-{i}", ARENA_BUFFERS * RECEIVE_BUFFER_BYTES) for i in range(workers)]
        run.fds.extend(arenas)
        pairs = {(k, i): wake_pair() for k in (0, 2) for i in range(workers)}
        p = run.pipeline
        fds = {3: seg.fd, 4: dest_fd}
        if psk is not None:
            fds[5] = psk
        for i in range(workers):
            fds[7 + 2 * i] = pairs[(0, i)][0].fileno()
            fds[8 + 2 * i] = pairs[(2, i)][1].fileno()
            fds[7 + 2 * workers + i] = arenas[i]
        p.spawn("pageferry-receiver", "pageferry-receiver",
                ["receive", listen, workers, int(psk is not None), int(accept_timeout * 1000)], fds)
        for i in range(workers):
            p.spawn(f"pageferry-inflater[{i}]", "pageferry-inflater", [i],
                    {3: seg.fd, 4: dest_fd, 5: pairs[(0, i)][1].fileno(), 6: pairs[(2, i)][0].fileno(),
                     7: arenas[i]})
        for a, b in pairs.values():
            a.close()
            b.close()

        def done():
            st = seg.stats(0)
            return run.progress.total * st["pages"] / max(st["total_pages"], 1)

        secs = run.watch(done)
        st = seg.stats(0)
        size = os.fstat(dest_fd).st_size
        os.rename(partial, into)
        ok = True
        summary = {
            "command": "receive", "listen": listen, "into": into, "workers": workers, "guest_bytes": size,
            "bytes_received": st["bytes"], "packets": st["packets"], "zero_pages": st["zero_pages"],
            "seconds": round(secs, 3), "cpu_seconds": pf_report.pipeline_cpu(p),
            "peak_anon_kib": run.sampler.peak_kib,
        }
        seg.close()
        line = (f"receive into {into}: {size / pf_report.MiB:.0f} MiB guest, {st['bytes'] / pf_report.MiB:.0f} MiB "
                f"received in {st['packets']} packets; totals and checksums match")
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        run.close(ok)
