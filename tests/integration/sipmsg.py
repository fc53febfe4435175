"""A minimal SIP message model for the integration tests: enough to build requests and check
what arrives. Msg parses one message; Stream reads messages (Content-Length framing, the
compact `l` form too) or raw bytes from a socket. Shared by test_sip.py and test_resume.py."""

import re

class Msg:
    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip(), value.strip()))
        self.is_request = not self.start.startswith("SIP/2.0 ")
        self.code = 0 if self.is_request else int(self.start.split()[1])
        self.method = self.start.split()[0] if self.is_request else None
        self.uri = self.start.split()[1] if self.is_request else None

    def all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def __repr__(self):
        return self.raw.decode("utf-8", "replace")


class Stream:
    """Reads SIP messages (Content-Length framing) or raw bytes from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"EOF with {self.buf!r} buffered")
        self.buf += chunk

    def read_raw(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self):
        while True:
            while self.buf.startswith(b"\r\n") and not self.buf.startswith(b"\r\n\r\n"):
                self.buf = self.buf[2:]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", self.buf[:end])
                need = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) >= need:
                    raw, self.buf = self.buf[:need], self.buf[need:]
                    return Msg(raw)
            self._fill()

    def send(self, data):
        self.sock.sendall(data)
