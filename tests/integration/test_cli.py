"""The command line: -V, -h, and a bad option (CONFIG.md)."""

import re
import unittest

import harness


class CommandLineTests(unittest.TestCase):

    def run_msgd(self, *args):
        r = harness.run_msgd(list(args))
        self.assertEqual(harness.find_markers(r.stderr), [], r.stderr)
        return r

    def test_version(self):
        r = self.run_msgd("-V")
        self.assertEqual(r.returncode, 0, r.stderr)
        first = r.stdout.strip().split("\n")[0] if r.stdout.strip() else ""
        self.assertRegex(first, r"^msgd \S+", "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertTrue(re.search(r"\d", first), "a version number: %r" % first)

    def test_help(self):
        r = self.run_msgd("-h")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue((r.stdout + r.stderr).strip(), "usage text expected")
        self.assertIn("-c", r.stdout + r.stderr)

    def test_bogus_option(self):
        r = self.run_msgd("--bogus")
        self.assertEqual(r.returncode, 2, "stdout %r stderr %r" % (r.stdout, r.stderr))
        self.assertTrue(r.stderr.strip(), "a message on stderr expected")

    def test_unknown_short_option(self):
        r = self.run_msgd("-Z")
        self.assertEqual(r.returncode, 2, "stdout %r stderr %r" % (r.stdout, r.stderr))

    def test_missing_option_argument(self):
        r = self.run_msgd("-c")
        self.assertEqual(r.returncode, 2, "stdout %r stderr %r" % (r.stdout, r.stderr))


if __name__ == "__main__":
    unittest.main()
