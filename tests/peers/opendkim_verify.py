"""Verify a message's DKIM signatures with OpenDKIM's ``opendkim-testmsg``, answering its DNS questions.

Run inside a private mount and network namespace (``unshare -mn``, see tests/peers/__init__.py):
libopendkim asks the C library's resolver, which reads /etc/resolv.conf and talks to port 53, so
this script brings the namespace's loopback up, binds a resolv.conf naming 127.0.0.1 over
/etc/resolv.conf (visible in this namespace only) and serves the TXT records of RECORDS (a JSON
object name → value) on 127.0.0.1:53, UDP and TCP (an RSA-2048 answer may not fit 512 bytes).

Usage: opendkim_verify.py RECORDS.json < message; exits with opendkim-testmsg's code and passes on
its stderr (silent and 0 = the signature verified).
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def answer(records: dict[str, str], query: bytes) -> bytes:
    request = dns.message.from_wire(query)
    response = dns.message.make_response(request)
    question = request.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    value = records.get(name)
    if value is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.TXT:
        strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        response.answer.append(dns.rrset.from_text(question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT,
                                                   strings))
    return response.to_wire(max_size=65535)


def serve(records: dict[str, str]) -> None:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            wire = answer(records, data)
            if len(wire) > 512:  # no EDNS from the C resolver: truncate, it retries over TCP
                reply = dns.message.from_wire(wire)
                reply.answer.clear()
                reply.flags |= dns.flags.TC
                wire = reply.to_wire()
            sock.sendto(wire, self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = self.rfile.read(2)
            if len(head) < 2:  # the readiness probe: connected and closed
                return
            size = int.from_bytes(head, "big")
            wire = answer(records, self.rfile.read(size))
            self.wfile.write(len(wire).to_bytes(2, "big") + wire)

    socketserver.UDPServer.allow_reuse_address = True
    socketserver.TCPServer.allow_reuse_address = True
    udp = socketserver.UDPServer(("127.0.0.1", 53), Udp)
    tcp = socketserver.TCPServer(("127.0.0.1", 53), Tcp)
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> int:
    with open(sys.argv[1]) as fh:
        records = {k.lower().rstrip("."): v for k, v in json.load(fh).items()}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
        conf.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    subprocess.run(["mount", "--bind", conf.name, "/etc/resolv.conf"], check=True)
    serve(records)
    socket.create_connection(("127.0.0.1", 53), timeout=5).close()
    message = sys.stdin.buffer.read()
    proc = subprocess.run(["opendkim-testmsg"], input=message, capture_output=True, timeout=60)
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
