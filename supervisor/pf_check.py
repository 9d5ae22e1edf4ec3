"""`pageferry check SNAP`: verify a snapshot without restoring it. The
pageferry-restore stage does it in its `check` mode, sandboxed like a restore:
header, bitmap and extent table are decoded and checked, then every
extent's page data is read (O_DIRECT where the filesystem allows) and its
CRC-32C compared. Nothing is written."""

import pf_abi
import pf_jobs
import pf_report


def check(ctx, snap, workers):
    run, meta_fd = pf_jobs.open_snapshot(ctx, "check", snap)
    try:
        seg = pf_jobs.spawn_snapshot_reader(ctx, run, snap, meta_fd, "check", workers, {})
        p = run.pipeline
        secs = run.watch(pf_jobs.pages_done(run, seg))
        st = seg.stats(pf_abi.STATS_DEST)
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
