"""A tiny authoritative DNS server on loopback for the mail-authentication tests (UDP and TCP).

Why a real server and not a stub resolver: the SPF/DKIM/DMARC code under test must go through the
same dnspython resolver path it uses in production (timeouts, SERVFAIL, truncation to TCP), so the
tests start this server on ``127.0.0.1:0`` and point a resolver at it.  Records come from a dict
``{(name, type): [rdata text, …]}``; a name listed in no key is NXDOMAIN, a known name without the
asked type is NOERROR/no data.  Names in ``silent`` never get an answer (a timeout), names in
``servfail`` get SERVFAIL.  Every question is recorded in :attr:`asked` so a test can count lookups.
Answers bigger than the client's UDP size are sent truncated (TC), which makes the client retry
over TCP, as a real server would.  Tests wait :data:`ANSWER_TIMEOUT` for names that answer and
:data:`SILENT_TIMEOUT` only where silence is the point.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Mapping

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = Mapping[tuple[str, str], Iterable[str]]
ANSWER_TIMEOUT = 10.0
"""Seconds a test waits for a name that answers: long, so a loaded machine never turns it into a timeout."""
SILENT_TIMEOUT = 1.0
"""Seconds a test waits where the name server is meant to stay silent."""


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    """Serve *records* on 127.0.0.1 (UDP and TCP on the same free port) until :meth:`close`."""

    def __init__(self, records: Records, *, silent: Iterable[str] = (), servfail: Iterable[str] = ()) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.known: set[str] = set()
        self.silent = {_key(n) for n in silent}
        self.servfail = {_key(n) for n in servfail}
        self.asked: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.update(records)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def update(self, records: Records) -> None:
        """Add or replace records (a test may change the zone between messages)."""
        for (name, rdtype), values in records.items():
            self.records[(_key(name), rdtype.upper())] = list(values)
            self.known.add(_key(name))

    def resolver(self, timeout: float = ANSWER_TIMEOUT) -> dns.asyncresolver.Resolver:
        """A dnspython resolver that asks only this server, with *timeout* seconds per query."""
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.timeout = timeout
        res.lifetime = timeout
        res.search = []
        return res

    def answer(self, data: bytes, max_size: int | None) -> bytes | None:
        """The wire answer to one query (None = stay silent)."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        try:
            return self._answer(query, max_size)
        except dns.exception.DNSException as exc:  # a bad record in a test's zone: say so, keep serving
            self.errors.append(f"{query.question[0].name}: {exc}")
            return None

    def _answer(self, query: dns.message.Message, max_size: int | None) -> bytes | None:
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rdtype))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.records:
            values = self.records[(name, rdtype)]
            rrset = dns.rrset.from_text_list(name, 60, dns.rdataclass.IN, rdtype, values)
            response.answer.append(rrset)
        wire = response.to_wire()
        if max_size is not None:
            limit = max(512, query.payload) if query.edns >= 0 else 512
            if len(wire) > limit:
                response.answer.clear()
                response.flags |= dns.flags.TC
                wire = response.to_wire()
        return bytes(wire)

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            wire = self.answer(data, 512)
            if wire is not None:
                try:
                    self.udp.sendto(wire, peer)
                except OSError:
                    return

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _peer = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    (size,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < size:
                        more = conn.recv(size - len(data))
                        if not more:
                            return
                        data += more
                    wire = self.answer(data, None)
                    if wire is None:
                        return
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
            except OSError:
                return

    def close(self) -> None:
        """Stop serving (the threads end when their sockets close)."""
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def txt(*chunks: str) -> str:
    """A TXT rdata text of one or more quoted character strings (records over 255 octets need several)."""
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def long_txt(value: str) -> str:
    """*value* split into 255-octet character strings, as a long DKIM key record must be."""
    return txt(*(value[i : i + 255] for i in range(0, len(value), 255)))


__all__ = ["ANSWER_TIMEOUT", "SILENT_TIMEOUT", "DnsServer", "Records", "dns", "long_txt", "txt"]
