"""The documents that ship with the code (docs/*.md, README.md) against the
code's own tables: every configuration key and section src/config.c accepts
is in docs/CONFIG.md, every command and error code of src/msg.h and
src/mod_*.c is in docs/PROTOCOL.md, and every test vector there is what
the suite's own encoder (msgproto.py) produces. No daemon is needed."""

import glob
import os
import re
import unittest

import msgproto as mp

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# Specified in docs/PROTOCOL.md but not (yet) in msgproto.py or src/msg.h.
HELLO = 6
DIRECT = 21

NOT_YET = "not yet"


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def strip_c_comments(src):
    """src without /* */ comments, then without // comments."""
    return re.sub(r"//[^\n]*", " ", re.sub(r"/\*.*?\*/", " ", src, flags=re.S))


def c_block(src, opener):
    """The text between the braces that follow `opener` in C source."""
    at = src.find(opener)
    if at < 0:
        raise AssertionError("%r not found in the C source" % opener)
    start = src.index("{", at)
    end = src.index("}", start)
    return src[start + 1:end]


def c_enum(src, name, prefix):
    """{suffix: value} of enum `name`'s members named PREFIX_suffix = N."""
    block = c_block(src, "enum %s {" % name)
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"\b%s(\w+)\s*=\s*(\d+)" % prefix, block)}


def config_keys():
    """[(section, key)] of src/config.c's key table, and its section list."""
    src = strip_c_comments(read("src/config.c"))
    table = c_block(src, "static const struct key_def keys[] =")
    keys = re.findall(r'\bKEY\(\s*"(\w+)"\s*,\s*"(\w+)"', table)
    sections = re.findall(r'"(\w+)"', c_block(src, "static const char *const sections[] ="))
    return keys, sections


def builtin_commands():
    """[(enum suffix, name)] of the commands the built-in modules
    (src/mod_*.c) register: the rows of their msgd_command tables."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "src", "mod_*.c"))):
        src = strip_c_comments(open(path, encoding="utf-8").read())
        out += re.findall(r'\{\s*MSG_CMD_(\w+)\s*,\s*"(\w+)"', src)
    return out


def md_chunks(text):
    """[(heading line, body)] for each Markdown heading."""
    out = []
    parts = re.split(r"(?m)^(#{1,6} .*)$", text)
    for i in range(1, len(parts), 2):
        out.append((parts[i], parts[i + 1]))
    return out


def table_rows(body):
    """The cells of each Markdown table row in body (separator rows left out)."""
    rows = []
    for line in body.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.match(r"^\|[\s|:-]+\|$", line):
            continue
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def config_section(doc, section):
    """The body under docs/CONFIG.md's heading for [section]."""
    found = [body for head, body in md_chunks(doc) if "`[%s]`" % section in head]
    if len(found) != 1:
        raise AssertionError("docs/CONFIG.md has %d headings naming `[%s]`, want 1"
                             % (len(found), section))
    return found[0]


class ConfigDocTests(unittest.TestCase):
    """docs/CONFIG.md against src/config.c's key table."""

    @classmethod
    def setUpClass(cls):
        cls.doc = read("docs/CONFIG.md")
        cls.keys, cls.sections = config_keys()

    def test_the_tables_were_parsed(self):
        # A parser that finds nothing would make every other check pass.
        self.assertGreaterEqual(len(self.keys), 20, self.keys)
        self.assertIn(("msg", "max_frame"), self.keys)
        self.assertIn("diagnostics", self.sections)
        self.assertEqual(sorted(set(s for s, _ in self.keys)), sorted(self.sections))

    def test_every_section_has_a_heading(self):
        for section in self.sections:
            with self.subTest(section=section):
                config_section(self.doc, section)

    def test_every_key_is_a_row_of_its_section(self):
        for section, key in self.keys:
            with self.subTest(section=section, key=key):
                body = config_section(self.doc, section)
                named = [r for r in table_rows(body) if "`%s`" % key in r[0]]
                self.assertEqual(len(named), 1, "docs/CONFIG.md: key `%s` has %d rows under "
                                 "`[%s]`, want 1" % (key, len(named), section))
                self.assertNotIn(NOT_YET, " ".join(named[0]),
                                 "docs/CONFIG.md calls [%s] %s not yet accepted, but "
                                 "src/config.c accepts it" % (section, key))

    def test_keys_the_build_lacks_are_marked(self):
        known = set(self.keys)
        for head, body in md_chunks(self.doc):
            m = re.search(r"`\[(\w+)\]`", head)
            if not m:
                continue
            section = m.group(1)
            for row in table_rows(body)[1:]:  # the first row is the header
                for key in re.findall(r"`(\w+)`", row[0]):
                    if (section, key) not in known:
                        with self.subTest(section=section, key=key):
                            self.assertIn(NOT_YET, " ".join(row),
                                          "docs/CONFIG.md documents [%s] %s, which "
                                          "src/config.c does not accept, without saying "
                                          "so" % (section, key))


class ProtocolDocTests(unittest.TestCase):
    """docs/PROTOCOL.md against src/msg.h and src/mod_*.c."""

    @classmethod
    def setUpClass(cls):
        cls.doc = read("docs/PROTOCOL.md")
        msg_h = strip_c_comments(read("src/msg.h"))
        cls.commands = c_enum(msg_h, "msg_command", "MSG_CMD_")
        cls.errors = c_enum(msg_h, "msg_error", "MSG_ERR_")
        cls.errors.pop("MAX", None)
        cls.builtin = builtin_commands()

    def summary_rows(self):
        """{number: row} of the command summary table."""
        bodies = [b for h, b in md_chunks(self.doc) if h.strip() == "### Summary"]
        self.assertEqual(len(bodies), 1, "docs/PROTOCOL.md needs one '### Summary' table")
        return {int(r[0]): r for r in table_rows(bodies[0]) if r[0].isdigit()}

    def test_the_tables_were_parsed(self):
        self.assertGreaterEqual(len(self.commands), 10, self.commands)
        self.assertEqual(self.commands.get("PING"), 1)
        self.assertEqual(len(self.errors), 12, self.errors)
        self.assertGreaterEqual(len(self.builtin), 8, self.builtin)

    def assert_command(self, number, name):
        rows = self.summary_rows()
        self.assertIn(number, rows, "docs/PROTOCOL.md's command summary has no row %d" % number)
        self.assertEqual(rows[number][1], name, "docs/PROTOCOL.md's summary row %d" % number)
        self.assertRegex(self.doc, r"(?m)^### %d %s\b" % (number, re.escape(name)),
                         "docs/PROTOCOL.md has no '### %d %s' section" % (number, name))

    def test_every_command_of_msg_h(self):
        for name, number in self.commands.items():
            with self.subTest(command=name):
                self.assert_command(number, name)

    def test_every_builtin_command(self):
        for suffix, name in self.builtin:
            with self.subTest(command=name):
                self.assertIn(suffix, self.commands, "src/mod_*.c row MSG_CMD_%s" % suffix)
                number = self.commands[suffix]
                self.assert_command(number, name)
                self.assertNotIn(NOT_YET, " ".join(self.summary_rows()[number]),
                                 "docs/PROTOCOL.md calls %s not yet implemented, but "
                                 "src/mod_*.c registers it" % name)

    def test_commands_the_build_lacks_are_marked(self):
        have = set(self.commands.values())
        for number, row in self.summary_rows().items():
            if number not in have:
                with self.subTest(number=number):
                    self.assertIn(NOT_YET, " ".join(row),
                                  "docs/PROTOCOL.md lists %d %s, which src/msg.h lacks, "
                                  "without saying it is not yet implemented" % (number, row[1]))

    def test_every_error_code(self):
        rows = {(r[0], r[1]) for r in table_rows(self.doc) if len(r) >= 2}
        for name, code in self.errors.items():
            with self.subTest(error=name):
                self.assertIn((str(code), name), rows,
                              "docs/PROTOCOL.md has no error table row | %d | %s |" % (code, name))


def vector_rows(doc):
    """{label: bytes} of the test vector table of docs/PROTOCOL.md."""
    bodies = [b for h, b in md_chunks(doc) if "Test vectors" in h]
    if len(bodies) != 1:
        raise AssertionError("docs/PROTOCOL.md needs one 'Test vectors' section")
    out = {}
    for row in table_rows(bodies[0]):
        m = re.fullmatch(r"`([0-9a-f ]+)`", row[1]) if len(row) == 2 else None
        if m:
            out[row[0]] = bytes.fromhex(m.group(1))
    return out


class VectorDocTests(unittest.TestCase):
    """Every vector of docs/PROTOCOL.md is what msgproto.py encodes."""

    EXPECTED = {
        "PING, payload `hi`": mp.encode(mp.PING, b"hi"),
        "its reply": mp.encode(mp.reply_cmd(mp.PING), b"hi"),
        "ECHO, empty payload": mp.encode(mp.ECHO, b""),
        "connection-level error BAD_MAGIC, text `bad magic`":
            mp.encode_error(mp.CONNECTION, mp.BAD_MAGIC, "bad magic"),
        "HELLO asking for zstd or deflate": mp.encode(HELLO, b"compress=zstd,deflate"),
        "DIRECT to `bob`, message `yo`": mp.encode(DIRECT, bytes([3]) + b"bob" + b"yo"),
    }

    @classmethod
    def setUpClass(cls):
        cls.vectors = vector_rows(read("docs/PROTOCOL.md"))

    def test_same_rows(self):
        self.assertEqual(sorted(self.vectors), sorted(self.EXPECTED))

    def test_each_vector_is_the_encoders(self):
        for label, want in self.EXPECTED.items():
            with self.subTest(vector=label):
                self.assertIn(label, self.vectors)
                self.assertEqual(self.vectors[label].hex(), want.hex())

    def test_each_vector_is_one_whole_frame(self):
        for label, raw in self.vectors.items():
            with self.subTest(vector=label):
                magic, version, _, length = mp.HEADER.unpack(raw[:mp.HEADER_SIZE])
                self.assertEqual((magic, version), (mp.MAGIC, mp.VERSION))
                self.assertEqual(length, len(raw) - mp.HEADER_SIZE)


class ReadmeTests(unittest.TestCase):
    """README.md and docs/ link to the documents in the repository."""

    DOCS = ["README.md"] + ["docs/" + n for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
                            if n.endswith(".md")]

    def test_readme_links_the_docs(self):
        readme = read("README.md")
        for target in ("docs/PROTOCOL.md", "docs/CONFIG.md", "docs/DESIGN.md"):
            with self.subTest(target=target):
                self.assertIn("](%s)" % target, readme)

    def test_readme_starts_with_make_run_and_make_test(self):
        block = re.search(r"```sh\n(.*?)```", read("README.md"), re.S).group(1)
        self.assertEqual([ln.split()[:2] for ln in block.splitlines()],
                         [["make", "run"], ["make", "test"]])

    def test_no_link_leaves_the_repository(self):
        for rel in self.DOCS:
            text = read(rel)
            with self.subTest(doc=rel):
                self.assertNotIn("../shared", text)
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if re.match(r"[a-z]+:", target):
                    continue  # http:, https:, mailto:
                with self.subTest(doc=rel, link=target):
                    path = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), target))
                    self.assertTrue(path.startswith(ROOT + os.sep) and os.path.exists(path),
                                    "%s links to %s, which is not in the repository"
                                    % (rel, target))


if __name__ == "__main__":
    unittest.main()
