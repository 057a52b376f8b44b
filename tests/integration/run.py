#!/usr/bin/env python3
"""Runs the msgd integration tests (every test_*.py here) against the real daemon.

usage: run.py [-k PATTERN]... [NAME]...
  NAME     a module (test_vectors), class (test_vectors.VectorTests) or test
           (test_vectors.VectorTests.test_ping_hi_reply_bytes); a NAME that is
           not one of these is taken as a -k pattern
  -k PAT   run only tests whose full name matches PAT (substring, or fnmatch
           wildcards), as in python -m unittest -k

Environment: MSGD_BIN, MSGD_TEST_TIMEOUT_SCALE, MSGD_KEEP_TMP (see harness.py);
MSGD_ALLOW_SKIP=1 lets skipped tests pass (otherwise any skip fails the run);
MSGD_RESULTS=FILE appends "integration PASSED FAILED SKIPPED" to FILE.

The last line is always: integration: N passed, N failed, N skipped
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class CountingResult(unittest.TextTestResult):
    """Counts passes (a test with a failing subtest is not a pass)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def is_module_name(name):
    mod = name.split(".")[0]
    return mod.startswith("test_") and os.path.isfile(os.path.join(HERE, mod + ".py"))


def build_suite(names, patterns):
    loader = unittest.TestLoader()
    pats = list(patterns)
    modules = []
    for n in names:
        if n.endswith(".py"):
            n = os.path.basename(n)[:-3]
        if is_module_name(n):
            modules.append(n)
        else:
            pats.append(n)
    if pats:
        loader.testNamePatterns = [p if "*" in p else "*%s*" % p for p in pats]
    if modules:
        suite = unittest.TestSuite()
        for m in modules:
            suite.addTests(loader.loadTestsFromName(m))
        return suite
    return loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)


def write_results(passed, failed, skipped):
    """Appends "integration PASSED FAILED SKIPPED" to $MSGD_RESULTS (the
    Makefile's per-build results file, like tests/unit/run.sh's "unit P F")."""
    path = os.environ.get("MSGD_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write("integration %d %d %d\n" % (passed, failed, skipped))


def main(argv):
    ap = argparse.ArgumentParser(description="msgd integration tests")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose name matches (substring or wildcard)")
    ap.add_argument("names", nargs="*", help="modules, classes or tests to run")
    args = ap.parse_args(argv)

    import harness  # after sys.path is set
    if not os.path.isfile(harness.MSGD_BIN):
        sys.stderr.write("run.py: warning: %s does not exist (build it or set MSGD_BIN)\n"
                         % harness.MSGD_BIN)
    sys.stderr.write("run.py: msgd %s, timeout scale %g\n" % (harness.MSGD_BIN, harness.SCALE))

    try:
        suite = build_suite(args.names, args.patterns)
    except (ImportError, AttributeError) as e:
        sys.stderr.write("run.py: cannot load tests: %s\n" % e)
        print("integration: 0 passed, 1 failed, 0 skipped")
        write_results(0, 1, 0)
        return 1

    runner = unittest.TextTestRunner(verbosity=2, resultclass=CountingResult, stream=sys.stderr)
    t0 = time.monotonic()
    try:
        result = runner.run(suite)
    except KeyboardInterrupt:
        sys.stderr.write("\nrun.py: interrupted\n")
        print("integration: 0 passed, 1 failed, 0 skipped (interrupted)")
        write_results(0, 1, 0)
        return 130
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.passed + len(result.expectedFailures)
    sys.stderr.flush()
    if result.skipped:
        for test, reason in result.skipped:
            sys.stdout.write("skipped: %s: %s\n" % (test, reason))
    status = 0
    notes = []
    if failed:
        status = 1
    elif passed + skipped == 0:
        notes.append("run.py: no test matched")
        status = 1
    elif skipped and os.environ.get("MSGD_ALLOW_SKIP") != "1":
        notes.append("run.py: %d skipped (set MSGD_ALLOW_SKIP=1 to accept skips)" % skipped)
        status = 1
    for n in notes:
        sys.stdout.write(n + "\n")
    sys.stdout.write("(%.1fs)\n" % (time.monotonic() - t0))
    print("integration: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.stdout.flush()
    write_results(passed, failed, skipped)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
