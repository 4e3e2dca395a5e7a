"""Bytes in, bytes (or nothing) out: the header checks, the parse, the size limit, the cache and
the counting around answer.py.

Dropped unanswered and counted as malformed: fewer than 12 bytes, a response (QR set), a
message dnspython cannot parse (truncated, bad names, unknown TSIG keys...), a query without
exactly one question. No FORMERR is sent: a reply to garbage only helps whoever forged its
source address. An opcode other than QUERY gets NOTIMP built from the header alone.

The cache: parsing and rendering with dnspython costs far more than answering, so a plain
query (one question of letters, digits, `-`, `_` and `*`, at most an OPT record) is read here
and its rendered answer reused for the same name (any case), type, class, EDNS shape and size
limit, as long as the zone index and the proxy endpoints are the same objects and the name's
guest is as parked as it was (answer.py `volatile`). The reused answer gets the query's ID, RD
bit and question bytes, so the question keeps the query's case (and the names compressed
against it follow). Anything else takes the full dnspython path and is not cached.
"""

from __future__ import annotations

import logging
import re
import struct
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from ..routing.endpoints import ProxyEndpoints
from .answer import UDP_PAYLOAD, Answerer
from .counters import DnsCounters
from .zone import ZoneIndex

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!HHHHHH")
_TYPE_CLASS = struct.Struct("!HH")
_OPT = struct.Struct("!HHBBHH")  # type, class (payload), ext rcode, version, flags, rdlength
_OPTION = struct.Struct("!HH")
_CLASSIC_UDP = 512
_OPCODE_SHIFT = 11
_NO_TYPE = dns.rdatatype.RdataType.NONE  # counted as type "other"
_OPT_TYPE = 41
_PADDING = 12
_LABEL_RE = re.compile(rb"^[A-Za-z0-9_*-]{1,63}$")
MAX_CACHED = 10_000


class _Plain(NamedTuple):
    """What of a plain query decides its answer."""

    name: str  # lowercased, no final dot
    question_end: int  # offset just past the question
    key: tuple[object, ...]


class _Cached(NamedTuple):
    wire: bytes
    rdtype: dns.rdatatype.RdataType
    rcode: dns.rcode.Rcode


class WireHandler:
    def __init__(self, answerer: Answerer, counters: DnsCounters) -> None:
        self.answerer = answerer
        self.counters = counters
        self._cache: dict[tuple[object, ...], _Cached] = {}
        self._cache_index: ZoneIndex | None = None
        self._cache_endpoints: ProxyEndpoints | None = None
        self.cache_hits = 0

    def handle(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The response's wire form, or None when the message is dropped."""
        counters = self.counters
        if len(wire) < _HEADER.size:
            counters.malformed += 1
            return None
        ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
        if flags & dns.flags.QR:
            counters.malformed += 1
            return None
        opcode = (flags >> _OPCODE_SHIFT) & 0xF
        if opcode != 0:
            counters.answered(_NO_TYPE, dns.rcode.NOTIMP)
            reply = dns.flags.QR | (opcode << _OPCODE_SHIFT) | (flags & dns.flags.RD)
            return _HEADER.pack(ident, reply | dns.rcode.NOTIMP, 0, 0, 0, 0)
        plain = None
        if qdcount == 1 and ancount == 0 and nscount == 0 and arcount <= 1:
            plain = _read_plain(wire, arcount, udp)
        if plain is None:
            return self._full(wire, udp, None)
        index = self.answerer.zone()
        endpoints = self.answerer.endpoints
        if index is not self._cache_index or endpoints != self._cache_endpoints:
            self._cache.clear()
            self._cache_index, self._cache_endpoints = index, endpoints
        key = (*plain.key, self.answerer.volatile(index, plain.name))
        cached = self._cache.get(key)
        if cached is None:
            return self._full(wire, udp, key)
        self.cache_hits += 1
        counters.answered(cached.rdtype, cached.rcode)
        out = cached.wire
        reply = (out[2] << 8 | out[3]) & ~dns.flags.RD | (flags & dns.flags.RD)
        end = plain.question_end
        return _HEADER.pack(ident, reply, *_HEADER.unpack_from(out)[2:]) + wire[12:end] + out[end:]

    def _full(self, wire: bytes, udp: bool, key: tuple[object, ...] | None) -> bytes | None:
        counters = self.counters
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # hostile bytes: whatever the parser raises, the message is dropped
            counters.malformed += 1
            return None
        if len(query.question) != 1:
            counters.malformed += 1
            return None
        rdtype = query.question[0].rdtype
        try:
            response = self.answerer.respond(query)
            if udp:
                out = _render_udp(response, _udp_limit(query.edns, query.payload))
                if out[2] & (dns.flags.TC >> 8):
                    counters.truncated += 1
            else:
                out = response.to_wire(max_size=65535)
        except Exception:
            log.exception("dns: no answer to %s", query.question[0])
            counters.errors += 1
            return None
        rcode = response.rcode()
        counters.answered(rdtype, rcode)
        if key is not None and not out[2] & (dns.flags.TC >> 8):
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = _Cached(out, rdtype, rcode)
        return out


def _render_udp(response: dns.message.Message, limit: int) -> bytes:
    try:
        return response.to_wire(max_size=limit, prefer_truncation=True)
    except dns.exception.TooBig:
        # dnspython can still overflow once it pads the OPT record: send the bare truncation.
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def _udp_limit(edns: int, payload: int) -> int:
    return max(_CLASSIC_UDP, min(payload, UDP_PAYLOAD)) if edns >= 0 else _CLASSIC_UDP


def _read_plain(wire: bytes, arcount: int, udp: bool) -> _Plain | None:
    """The question and EDNS shape of a plain query, or None for the full path."""
    labels: list[bytes] = []
    offset = 12
    size = len(wire)
    while True:
        if offset >= size:
            return None
        length = wire[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > size:
            return None  # a compression pointer or a bad length: the full path decides
        label = wire[offset : offset + length]
        if not _LABEL_RE.match(label):
            return None
        labels.append(label)
        offset += length
    if offset - 12 > 255 or offset + 4 > size:
        return None
    rdtype, rdclass = _TYPE_CLASS.unpack_from(wire, offset)
    offset += 4
    question_end = offset
    edns: tuple[object, ...] = (-1, _CLASSIC_UDP if udp else 0, False)
    if arcount == 1:
        # The one additional record must be a well-formed OPT of version 0 at the end.
        if offset + 1 + _OPT.size > size or wire[offset] != 0:
            return None
        opt_type, payload, _ext, version, _flags, rdlength = _OPT.unpack_from(wire, offset + 1)
        options = offset + 1 + _OPT.size
        if opt_type != _OPT_TYPE or version != 0 or options + rdlength != size:
            return None
        padded = False
        at = options
        while at < size:
            if at + _OPTION.size > size:
                return None
            code, length = _OPTION.unpack_from(wire, at)
            at += _OPTION.size + length
            padded = padded or code == _PADDING
        if at != size:
            return None
        edns = (0, _udp_limit(0, payload) if udp else 0, padded)
    elif offset != size:
        return None
    name = b".".join(labels).lower().decode("ascii")
    return _Plain(name, question_end, (name, rdtype, rdclass, udp, *edns))
