"""A throw-away PKI for the TLS tests, made at run time with the `openssl`
command in a temp dir (no private key is committed): two CAs ("ca" and
"otherca"), server certificates for 127.0.0.1 and localhost signed by "ca"
(serials SERIAL_1 and SERIAL_2), a client certificate of "ca" and one of
"otherca" ("stranger"), and a file that is not a certificate.

Each test module makes its own: pki = Pki("prefix-"); then pki.create()
in setUpModule (it raises SkipTest without the openssl command) and
pki.remove() in tearDownModule. pki.path(name) is a file in it, and
pki.tls_config() a daemon config with a tls_listen and [tls]."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import timeout

SERIAL_1 = 0x1001
SERIAL_2 = 0x2002
SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost"
CLIENT_EXT = "extendedKeyUsage=clientAuth"


class Pki:
    def __init__(self, prefix):
        # Named now (configs refer to the files at import time), filled by create().
        self.dir = tempfile.mkdtemp(prefix=prefix)

    def path(self, name):
        return os.path.join(self.dir, name)

    def openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout(2))
        if r.returncode != 0:
            raise AssertionError("openssl %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def make_ca(self, name):
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", self.path(name + ".key"), "-out",
                     self.path(name + ".pem"), "-days", "2", "-subj", "/CN=msgd test " + name)

    def make_cert(self, name, ca, serial, ext):
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", self.path(name + ".key"), "-out", self.path(name + ".csr"),
                     "-subj", "/CN=" + name)
        with open(self.path(name + ".ext"), "w") as f:
            f.write(ext + "\n")
        self.openssl("x509", "-req", "-in", self.path(name + ".csr"), "-CA",
                     self.path(ca + ".pem"), "-CAkey", self.path(ca + ".key"), "-set_serial",
                     str(serial), "-days", "2", "-out", self.path(name + ".pem"), "-extfile",
                     self.path(name + ".ext"))

    def create(self):
        if not shutil.which("openssl"):
            raise unittest.SkipTest("the openssl command is needed (scripts/deps.sh)")
        os.makedirs(self.dir, exist_ok=True)
        self.make_ca("ca")
        self.make_ca("otherca")
        self.make_cert("server", "ca", SERIAL_1, SERVER_EXT)
        self.make_cert("server2", "ca", SERIAL_2, SERVER_EXT)
        self.make_cert("client", "ca", 0x3003, CLIENT_EXT)
        self.make_cert("stranger", "otherca", 0x4004, CLIENT_EXT)
        with open(self.path("garbage.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls_config(self, **tls):
        """A daemon config serving TLS on an ephemeral port with the server
        certificate; tls adds [tls] keys (ca=... asks for client
        certificates)."""
        t = {"cert": self.path("server.pem"), "key": self.path("server.key")}
        t.update(tls)
        return {"msg": {"tls_listen": "127.0.0.1:0"}, "tls": t}
