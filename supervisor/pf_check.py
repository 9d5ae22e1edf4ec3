"""`pageferry check SNAP`: verify a snapshot without restoring it. The
receiver stage does it in its `check` mode, sandboxed like a restore:
header, bitmap and extent table are decoded and checked, then every
extent's page data is read (O_DIRECT where the filesystem allows) and its
CRC-32C compared. Nothing is written."""
import os

import pf_abi
import pf_jobs
import pf_report
import pf_segment


def check(ctx, snap, workers):
    meta_fd = pf_jobs._open(snap, os.O_RDONLY, "open snapshot")
    run = pf_jobs.Run(ctx, "check", os.fstat(meta_fd).st_size)
    run.fds.append(meta_fd)
    try:
        data_fd, _ = pf_jobs._open_direct(snap, os.O_RDONLY)
        run.fds.append(data_fd)
        seg = pf_segment.Segment(ctx.stage("pageferry-mkseg"), pf_jobs.PAGE_4K, 1, 8, 1, 1)
        run.fds.append(os.dup(seg.fd))
        p = run.pipeline
        p.spawn("pageferry-receiver", "pageferry-receiver", ["--mode=check", f"--threads={workers}"],
                {pf_abi.fd("receiver", "segment"): seg.fd, pf_abi.fd("receiver", "meta"): meta_fd,
                 pf_abi.fd("receiver", "data"): data_fd})
        secs = run.watch(pf_jobs.pages_done(run, seg))
        st = seg.stats(pf_abi.STATS_SCANNER)
        summary = {
            "command": "check", "snapshot": snap, "threads": workers, "ok": True,
            "pages_present": st["total_pages"], "bytes_read": st["bytes"], "seconds": round(secs, 3),
            "read_mib_per_s": round(st["bytes"] / pf_report.MiB / secs, 1),
            "direct_io": bool(st["flags"] & pf_abi.FLAG_DIRECT_IO),
            "cpu_seconds": pf_report.pipeline_cpu(p),
        }
        seg.close()
        line = (f"check {snap}: good: header, bitmap, extent table and the checksums of "
                f"{st['total_pages']} stored pages ({st['bytes'] / pf_report.MiB:.0f} MiB) match, "
                f"in {secs:.2f} s")
        pf_report.emit_summary(summary, ctx.json, line)
    finally:
        run.close(True)
