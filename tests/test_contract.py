#!/usr/bin/python3
"""The C/Python contract (doc/architecture.md, "One contract, written in C"):
the supervisor's pf_abi.py is what tools/pf_describe.c prints from the C
headers now, the supervisor uses no statistic or round-record name that is
not in it, and a segment formatted by the C side (pageferry-mkseg) reads
back through the supervisor's reader (pf_segment) with the ABI version and
geometry C wrote.

Needs the build: PAGEFERRY_BUILD_DIR (default ../build), PAGEFERRY_SOURCE_DIR."""
import ast
import glob
import importlib.util
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("PAGEFERRY_SOURCE_DIR", os.path.join(HERE, ".."))
BUILD = os.environ.get("PAGEFERRY_BUILD_DIR", os.path.join(SOURCE, "build"))
DESCRIBE = os.path.join(BUILD, "tools", "pageferry-describe")
GENERATED = os.path.join(BUILD, "tools", "pf_abi.py")
SUPERVISOR = os.path.join(SOURCE, "supervisor")

sys.path[:0] = [SUPERVISOR, os.path.dirname(GENERATED)]


def describe():
    return subprocess.run([DESCRIBE], check=True, capture_output=True, text=True).stdout


def load_module(text):
    spec = importlib.util.spec_from_loader("pf_abi_under_test", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(text, "pf_abi.py", "exec"), mod.__dict__)
    return mod


def parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def names_read(kind):
    """{(file, name)} for every string key the supervisor reads from a
    statistics block (kind "stats": seg.stats(...)) or a round record
    ("round_record"): a subscript of the call itself, or of a variable that
    holds its result (assigned from it, from a tuple or list of such calls,
    or a loop variable over such a list)."""
    found = set()
    for path in glob.glob(os.path.join(SUPERVISOR, "*.py")):
        tree = parse(path)
        bound = set()

        def holds(v):
            if isinstance(v, ast.Call):
                return isinstance(v.func, ast.Attribute) and v.func.attr == kind
            if isinstance(v, ast.Name):
                return v.id in bound
            if isinstance(v, (ast.ListComp, ast.GeneratorExp)):
                return holds(v.elt)
            if isinstance(v, (ast.Tuple, ast.List)):
                return bool(v.elts) and all(holds(e) for e in v.elts)
            return False

        def bind(target):
            bound.update(x.id for x in ast.walk(target) if isinstance(x, ast.Name))

        for _ in range(3):  # variables of variables: a fixed point in a few passes
            for n in ast.walk(tree):
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        if isinstance(t, ast.Tuple) and isinstance(n.value, ast.Tuple):
                            for te, ve in zip(t.elts, n.value.elts):
                                if holds(ve):
                                    bind(te)
                        elif holds(n.value):
                            bind(t)
                if isinstance(n, (ast.comprehension, ast.For)) and (holds(n.iter) or (
                        isinstance(n.iter, (ast.ListComp, ast.GeneratorExp)) and holds(n.iter.elt))):
                    bind(n.target)
        for n in ast.walk(tree):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and \
                    isinstance(n.slice.value, str) and holds(n.value):
                found.add((os.path.basename(path), n.slice.value))
    return found


class Generated(unittest.TestCase):
    def test_generated_module_is_what_the_c_side_says_now(self):
        with open(GENERATED) as f:
            self.assertEqual(f.read(), describe(),
                             f"{GENERATED} differs from what pageferry-describe prints: edited by hand, or "
                             "stale (rebuild)")

    def test_the_comparison_sees_a_change(self):
        """The check above, on a module changed by hand, fails."""
        text = describe()
        edited = text.replace('"zero_pages"', '"zeros"')
        self.assertNotEqual(edited, text)
        self.assertNotEqual(load_module(edited).STAT_NAMES, load_module(text).STAT_NAMES)

    def test_no_hand_written_copies_in_the_supervisor(self):
        """The names and numbers pf_abi defines are not defined again."""
        abi = load_module(describe())
        consts = {k for k in vars(abi) if k.isupper()}
        for path in glob.glob(os.path.join(SUPERVISOR, "*.py")):
            for n in parse(path).body:
                if isinstance(n, ast.Assign) and not isinstance(n.value, (ast.Attribute, ast.Name)):
                    for t in n.targets:
                        for x in ast.walk(t):
                            if isinstance(x, ast.Name):
                                self.assertNotIn(x.id, consts, f"{path} defines {x.id} again")


class Names(unittest.TestCase):
    def setUp(self):
        self.abi = load_module(describe())

    def test_every_statistic_read_is_one_of_c(self):
        used = names_read("stats")
        # The test must see what it checks: these are read by the summaries.
        self.assertTrue({"pages", "hole_pages", "flags", "zero_pages", "sendfile_bytes"} <=
                        {name for _, name in used}, used)
        for where, name in sorted(used):
            self.assertIn(name, self.abi.STAT_NAMES, f"{where} reads statistic '{name}', not in shm_layout.h")

    def test_every_round_field_read_is_one_of_c(self):
        used = names_read("round_record")
        self.assertTrue({"done", "dirty_pages", "expected_us"} <= {name for _, name in used}, used)
        for where, name in sorted(used):
            self.assertIn(name, self.abi.ROUND_FIELDS, f"{where} reads round field '{name}', not in shm_layout.h")

    def test_names_follow_the_c_enums(self):
        """Spot checks against the enums' order in shm/shm_layout.h."""
        self.assertEqual(self.abi.STAT_NAMES[0], "pages")
        self.assertEqual(len(self.abi.STAT_NAMES), self.abi.STAT_COUNT)
        self.assertEqual(self.abi.STATS_BLOCK_SIZE, 8 * self.abi.STAT_COUNT)
        self.assertEqual(self.abi.ROUND_FIELDS[-1], "done")


class RealSegment(unittest.TestCase):
    """pageferry-mkseg (C) formats; pf_segment (Python) reads."""

    def test_python_reads_what_c_wrote(self):
        import pf_abi
        import pf_segment
        geometry = dict(page_size=4096, n_workers=3, ring_slots=64, max_run_pages=16, guest_pages=1000)
        seg = pf_segment.Segment(os.path.join(BUILD, "tools", "pageferry-mkseg"), *geometry.values())
        try:
            self.assertEqual(seg.header("magic"), pf_abi.SEG_MAGIC)
            self.assertEqual(seg.header("abi_version"), pf_abi.ABI_VERSION)
            self.assertEqual(seg.header("header_size"), pf_abi.HEADER_SIZE)
            self.assertEqual(seg.header("segment_size"), os.fstat(seg.fd).st_size)
            for k, v in geometry.items():
                self.assertEqual(seg.header(k), v, k)
            n_stats = pf_abi.STATS_WORKER0 + geometry["n_workers"] + pf_abi.MAX_ROUNDS
            self.assertEqual(seg.header("n_stats"), n_stats)
            self.assertEqual(seg.header("n_rings"), 3 * geometry["n_workers"])
            # The statistics end where the fingerprint table begins.
            self.assertEqual(seg.header("stats_offset") + n_stats * pf_abi.STATS_BLOCK_SIZE,
                             seg.header("fp_offset"))
            self.assertEqual(seg.header("cancel"), 0)
            seg.set_cancel()
            self.assertEqual(seg.header("cancel"), 1)
            self.assertEqual(seg.stats(pf_abi.STATS_WRITER), dict.fromkeys(pf_abi.STAT_NAMES, 0))
            self.assertTrue(all(v == 0 for v in seg.round_record(geometry["n_workers"], pf_abi.MAX_ROUNDS).values()))
            with self.assertRaises(IndexError):
                seg.round_record(geometry["n_workers"], pf_abi.MAX_ROUNDS + 1)
        finally:
            seg.close()

    def test_mkseg_refuses_a_bad_argument_by_name(self):
        r = subprocess.run([os.path.join(BUILD, "tools", "pageferry-mkseg"), "--page-size=4096", "--workers=0"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, r"^pageferry-mkseg: bad argument '--workers=0' \(expected 1\.\.64\)")


class StageArguments(unittest.TestCase):
    """Stages take named arguments and name the one that is wrong."""

    def run_stage(self, path, *args):
        return subprocess.run([os.path.join(BUILD, path)] + list(args), capture_output=True, text=True)

    def test_missing_unknown_and_bad_arguments_are_named(self):
        cases = [
            ("writer/pageferry-writer", ["--mode=migrate"], r"missing argument --to"),
            ("writer/pageferry-writer", ["--mode=snapshot", "--channels=2"], r"unknown argument '--channels=2'"),
            ("writer/pageferry-writer", ["--mode=copy"], r"bad argument '--mode=copy'"),
            ("writer/pageferry-writer", ["snapshot"], r"argument 'snapshot' is not --NAME=VALUE"),
            ("dest/pageferry-restore", ["--mode=restore", "--threads=0"],
             r"bad argument '--threads=0' \(expected 1\.\.64\)"),
            ("dest/pageferry-restore", ["--mode=check", "--threads=1", "--threads=2"],
             r"argument '--threads=2' given twice"),
            ("dest/pageferry-restore", ["--mode=receive", "--threads=1"], r"bad argument '--mode=receive'"),
            ("dest/pageferry-receive", ["--mode=receive"], r"missing argument --listen"),
            ("dest/pageferry-receive", ["--listen=127.0.0.1:1", "--tls=none", "--accept-timeout-ms=1",
                                        "--io-timeout-ms=1", "--threads=2"], r"unknown argument '--threads=2'"),
            ("dest/pageferry-receive", ["--listen=127.0.0.1:1", "--tls=rsa", "--accept-timeout-ms=1",
                                        "--io-timeout-ms=1"], r"bad argument '--tls=rsa'"),
            ("scanner/pageferry-scanner", ["--live"], r"missing argument --downtime-limit-ms"),
            ("scanner/pageferry-scanner", ["--held", "--live", "--downtime-limit-ms=1", "--max-bandwidth=0",
                                           "--max-rounds=2", "--pause-timeout-ms=1"], r"--held does not go with --live"),
            ("dest/pageferry-restore", ["--mode=check", "--threads=1", "--device-state"],
             r"--device-state goes with --mode=restore"),
            ("dest/pageferry-restore", ["--mode=check", "--threads=1", "--done-notice"],
             r"--done-notice goes with --mode=restore"),
            ("writer/pageferry-writer", ["--mode=snapshot", "--device-state", "--guest-read-notice"],
             r"--guest-read-notice goes with --mode=snapshot, --device-state and --guest-held-stopped"),
            ("workers/pageferry-worker", ["--index=1", "--zstd-level=20"],
             r"bad argument '--zstd-level=20' \(expected 1\.\.19\)"),
            ("dest/pageferry-inflater", ["--index=0", "--in-place"], r"unknown argument '--in-place'"),
        ]
        for path, args, message in cases:
            with self.subTest(stage=path, args=args):
                r = self.run_stage(path, *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                name = os.path.basename(path)
                self.assertRegex(r.stderr, rf"^{name}: {message} \(usage: {name} ")


if __name__ == "__main__":
    unittest.main()
