"""A real DNS server on loopback for tests: answers from an in-memory zone over UDP.

The relay resolves MX, A, AAAA and TXT records through it with an ordinary dnspython
resolver (``RELAY_DNS_SERVER=127.0.0.1:<port>``), so the code under test is the code
that runs in the cloud, only pointed at another server. Names are absolute and
case-insensitive; every test adds records under a domain of its own.

Behaviour, as an authoritative server for every name would answer:

- a name with records of the asked type: NOERROR with them (``aa`` set);
- a name with a CNAME (asked for another type): the CNAME alone; the client follows it;
- a name with records of other types only: NOERROR and no answer (NODATA);
- any other name: NXDOMAIN;
- :meth:`Zone.fail` names: SERVFAIL, or no answer at all (the client times out).
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


def _key(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


@dataclass
class Zone:
    #: absolute name -> rdtype -> rdata in presentation format
    records: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    #: absolute name -> "servfail" | "drop"
    failures: dict[str, str] = field(default_factory=dict)
    #: queries seen, as (name, type)
    queries: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        with self.lock:
            self.records[_key(name)].setdefault(rdtype.upper(), []).extend(rdata)

    def fail(self, name: str, how: str = "servfail") -> None:
        assert how in ("servfail", "drop")
        with self.lock:
            self.failures[_key(name)] = how

    def heal(self, name: str) -> None:
        with self.lock:
            self.failures.pop(_key(name), None)

    def txt(self, name: str) -> bytes | None:
        """The TXT strings of ``name``, concatenated (a dkimpy ``dnsfunc`` reads a zone this way)."""
        with self.lock:
            found = self.records.get(_key(name), {}).get("TXT")
        if not found:
            return None
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, found[0])
        return b"".join(rdata.strings)  # type: ignore[attr-defined]

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.queries.append((name, rdtype))
            failure = self.failures.get(name)
            if failure == "drop":
                return None
            if failure == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            types = self.records.get(name)
            if not types:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response
            for answer_type in (rdtype, "CNAME"):
                if answer_type in types:
                    response.answer.append(
                        dns.rrset.from_text_list(question.name, TTL, "IN", answer_type, types[answer_type])
                    )
                    break
        return response


class DnsServer:
    """UDP on ``host`` (a free port unless given); ``start()`` / ``stop()`` or a context manager."""

    def __init__(self, zone: Zone | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone = zone or Zone()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def address(self) -> str:
        """``host:port``, as RELAY_DNS_SERVER takes it."""
        return f"{self.host}:{self.port}"

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # not DNS: ignore it, as a server would
                continue
            response = self.zone.answer(query)
            if response is not None:
                self.sock.sendto(response.to_wire(max_size=65535), peer)
