#!/usr/bin/env python3
"""Writes the seed inputs of dns_message_fuzz into corpus/dns/.

Run from anywhere: python3 tests/fuzz/make_dns_corpus.py
The seeds are small real-looking queries and responses (EDNS, 0x20 case,
compression, odd label bytes) from which the fuzzer mutates.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "dns")


def name(dotted):
    out = b""
    for label in dotted.split(".") if dotted else []:
        raw = label.encode("latin-1")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def ptr(offset):
    return struct.pack(">H", 0xC000 | offset)


def header(id_, flags, qd, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def rr(owner, type_, ttl, rdata, class_=1):
    return owner + struct.pack(">HHIH", type_, class_, ttl, len(rdata)) + rdata


def opt(payload=1232, do=False, options=b"", version=0):
    return rr(b"\0", 41, (version << 16) | (0x8000 if do else 0), options, payload)


def option(code, data):
    return struct.pack(">HH", code, len(data)) + data


RD = 0x0100
SEEDS = {
    "a_plain": header(0x1234, RD, 1) + name("www.example.com") + struct.pack(">HH", 1, 1),
    "aaaa_edns_do_cookie": header(0xBEEF, RD, 1, ar=1) + name("WwW.ExAmPlE.CoM")
    + struct.pack(">HH", 28, 1) + opt(4096, True, option(10, bytes(range(8)))),
    "ptr_fake": header(7, RD, 1, ar=1) + name("4.0.18.198.in-addr.arpa")
    + struct.pack(">HH", 12, 1) + opt(1232),
    "https_padding": header(9, RD | 0x0010, 1, ar=1) + name("_443._https.example.org")
    + struct.pack(">HH", 65, 1) + opt(1232, False, option(12, bytes(20))),
    "odd_labels": header(10, RD, 1) + b"\x03a.b\x02\\\xff\x00" + struct.pack(">HH", 16, 1),
    "opcode_status": header(11, 0x1000, 1) + name("example.net") + struct.pack(">HH", 1, 1),
    "edns_version1": header(12, RD, 1, ar=1) + name("example.net") + struct.pack(">HH", 1, 1)
    + opt(1232, False, b"", 1),
    "root_ns": header(13, 0, 1) + name("") + struct.pack(">HH", 2, 1),
}

# A response using compression everywhere RFC 1035 allows it.
resp = header(0x4242, 0x8180, 1, 3, 1, 1) + name("www.example.com") + struct.pack(">HH", 1, 1)
resp += rr(ptr(12), 5, 300, b"\x03cdn" + ptr(16))  # CNAME, RDATA at 45
resp += rr(ptr(45), 1, 60, bytes([192, 0, 2, 1]))
resp += rr(ptr(16), 15, 60, b"\x00\x0a\x04mail" + ptr(16))
resp += rr(ptr(16), 6, 60, b"\x02ns" + ptr(16) + b"\x04root" + ptr(16) + bytes(20))
resp += opt(1232, True)
SEEDS["response_compressed"] = resp

srv = header(0x5353, 0x8180, 1, 1) + name("_sip._tcp.example.com") + struct.pack(">HH", 33, 1)
srv += rr(ptr(12), 33, 60, struct.pack(">HHH", 10, 5, 5060) + b"\x03sip" + ptr(22))
SEEDS["response_srv"] = srv

two = header(14, RD, 2) + name("a.example") + struct.pack(">HH", 1, 1)
two += b"\x01b" + ptr(14) + struct.pack(">HH", 1, 1)
SEEDS["two_questions"] = two

# A large response: names after byte 0x3FFF, which pointers cannot reach.
big_count = 1200
big = header(0x6464, 0x8180, 1, big_count) + name("example.com") + struct.pack(">HH", 255, 1)
for i in range(big_count):
    big += rr(bytes([len(f"h{i}")]) + f"h{i}".encode() + ptr(12), 1, 60, struct.pack(">I", i))
SEEDS["response_large"] = big

os.makedirs(OUT, exist_ok=True)
for seed_name, data in SEEDS.items():
    with open(os.path.join(OUT, seed_name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
