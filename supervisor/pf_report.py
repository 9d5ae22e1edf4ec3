"""What the user sees: a progress line on a terminal, a one-line summary,
or a JSON summary."""
import sys
import time

MiB = 1024 * 1024


class Progress:
    def __init__(self, verb, total_bytes, enabled):
        self.verb = verb
        self.total = max(total_bytes, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done_bytes, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        secs = max(now - self.start, 1e-6)
        rate = done_bytes / secs
        frac = min(done_bytes / self.total, 1.0)
        eta = (self.total - done_bytes) / rate if rate > 0 else 0
        sys.stderr.write(f"\r{self.verb}: {frac * 100:5.1f}%  {rate / MiB:8.0f} MiB/s  ETA {eta:5.1f}s ")
        sys.stderr.flush()

    def finish(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def cpu_seconds(stage):
    ru = stage.rusage
    return round(ru.ru_utime + ru.ru_stime, 3) if ru else None


def pipeline_cpu(pipeline):
    return {s.label: cpu_seconds(s) for s in pipeline.stages}


def peak_rss_kib(pipeline):
    """Sum over stages of each one's peak resident set (includes guest pages
    it touched through its shared mapping: an upper bound)."""
    return sum(s.rusage.ru_maxrss for s in pipeline.stages if s.rusage)


class AnonSampler:
    """Peak of the pipeline's own (anonymous) memory, sampled from /proc: the
    guest mapping is shared file memory and is not the pipeline's cost."""

    def __init__(self):
        self.peak_kib = 0

    def sample(self, pids):
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        self.peak_kib = max(self.peak_kib, total)


def emit_summary(summary, as_json, line):
    if as_json:
        import json  # only here: a command that prints a line does not pay for it
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(line)


def replaced_text(replacements):
    """The summary's mention of stages that died and were replaced."""
    if not replacements:
        return ""
    return f"; {len(replacements)} stage(s) died and were replaced ({', '.join(replacements)})"
