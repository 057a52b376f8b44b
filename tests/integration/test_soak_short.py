"""The short soak (issue 6): tests/soak/soak.py's run for 20 s inside `make
test`, with the same pass criteria as `make soak`: every one of 50
connections' random-sized (20 B..64 KiB) ECHO payloads, each carrying a
sequence number and a CRC32, comes back exactly once, intact and in order; no
connection is closed; after the warm-up the fd count is flat and (without
sanitizers) the RSS stays within 10%; msgd exits 0 with a clean log."""

import os
import sys
import unittest

from harness import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "soak"))
import soak  # noqa: E402

SHORT_SECONDS = 20


class ShortSoakTests(unittest.TestCase):

    def test_short_soak(self):
        lines = []
        res = soak.run_soak(SHORT_SECONDS, conns=50, log=lines.append)
        text = soak.summary(res)
        sys.stderr.write("\n" + text + "\n")
        self.assertEqual(res["violations"], [], "%s\nsamples:\n%s" % (text, "\n".join(lines)))
        self.assertGreater(res["replies"], 0)
        self.assertEqual(res["requests"], res["replies"])
        self.assertEqual(res["lost"], 0)


if __name__ == "__main__":
    unittest.main()
