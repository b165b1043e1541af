#!/usr/bin/env python3
"""Re-encodes the first N datagrams of a length-prefixed HEPv3 capture with
their SIP payload compressed (chunk 0x0010), as OpenSIPS' proto_hep does with
`payload_compression`: its compression module writes zlib (RFC 1950) or gzip
(RFC 1952). Here datagram i is gzip when i % 3 == 0, zlib when 1, raw deflate
(RFC 1951) when 2, all by the system's C zlib. Every other chunk is kept.

    python3 compress_hep.py hep.raw hep-compressed-first-120.raw 120
"""
import struct
import sys
import zlib


def chunks(packet):
    off = 6
    while off < len(packet):
        vendor, ctype, clen = struct.unpack("!HHH", packet[off:off + 6])
        yield vendor, ctype, packet[off + 6:off + clen]
        off += clen


def compress(data, kind):
    if kind == 0:
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + 15)  # gzip
    elif kind == 1:
        c = zlib.compressobj(9, zlib.DEFLATED, 15)  # zlib
    else:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate
    return c.compress(data) + c.flush()


def main(src, dst, count):
    raw = open(src, "rb").read()
    out = bytearray()
    pos = i = 0
    while pos < len(raw) and i < count:
        (n,) = struct.unpack("!I", raw[pos:pos + 4])
        packet = raw[pos + 4:pos + 4 + n]
        pos += 4 + n
        assert packet[:4] == b"HEP3"
        body = bytearray()
        for vendor, ctype, value in chunks(packet):
            if vendor == 0 and ctype == 0x000F:
                ctype, value = 0x0010, compress(value, i % 3)
            body += struct.pack("!HHH", vendor, ctype, len(value) + 6) + value
        new = b"HEP3" + struct.pack("!H", len(body) + 6) + bytes(body)
        out += struct.pack("!I", len(new)) + new
        i += 1
    open(dst, "wb").write(bytes(out))
    print(f"{i} datagrams, {len(out)} bytes")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
