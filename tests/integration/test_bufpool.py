"""The reactor's pool of emptied buffers and big frames: with max_frame 4M, a
client that echoes 4 MiB frames gets its input and output buffers (8 MiB
each, the power of two past the frame) from the pool every time, instead
of fresh memory whose pages fault in one by one. Seen from outside as the
pool's size in STATS (buffer_pool_bytes) and the daemon's minor page
faults (/proc/PID/stat), both counts, not timings. The bounds follow
max_frame when a reload changes it."""
import os

import msgproto as mp
from harness import MsgdTestCase, timeout, wait_until

FRAME = 4 << 20


def minor_faults(pid):
    """The process's minor page faults so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7])  # field 10 of stat(5), the 8th after "(comm)"


LIMITS = {"output_high_water": "8M", "output_low_water": "1M", "output_hard_limit": "32M"}


class BigFramePoolTests(MsgdTestCase):
    shared_daemon = False

    def check_reuse(self, d):
        c = self.connect(daemon=d)
        payload = os.urandom(FRAME)
        self.assertEqual(c.call(mp.ECHO, payload, timeout(2)), (mp.reply_cmd(mp.ECHO), payload))
        # Both 8 MiB buffers went back to the pool once the reply was out
        # (the pool frees only what stays unused for a second).
        wait_until(lambda: self.stats(c)["buffer_pool_bytes"] >= 16 << 20, timeout(0.2),
                   "the input and output buffers kept")
        before = minor_faults(d.pid)
        rounds = 4
        for _ in range(rounds):
            self.assertEqual(c.call(mp.ECHO, payload, timeout(2)),
                             (mp.reply_cmd(mp.ECHO), payload))
        faults = minor_faults(d.pid) - before
        # Fresh buffers would fault in at least the 1,024 pages of each 4 MiB
        # they hold, twice a round; reused ones fault nothing.
        self.assertLess(faults, rounds * 1024 // 2,
                        "%d minor faults for %d 4 MiB ECHOs" % (faults, rounds))

    def test_big_frames_reuse_pool_memory(self):
        d = self.start_daemon({"server": {"reactors": 1}, "msg": {"max_frame": "4M"},
                               "limits": LIMITS})
        self.check_reuse(d)

    def test_a_reload_that_raises_max_frame_raises_the_bounds(self):
        d = self.start_daemon({"server": {"reactors": 1}, "msg": {"max_frame": "1M"},
                               "limits": LIMITS})
        d.reload({"msg": {"max_frame": "4M"}})
        self.check_reuse(d)
