#!/usr/bin/env python3
"""Generates the STIX pattern corpus for the differential test of threatbus-stix's parser.

Every pattern is run through the OASIS reference validator (PyPI ``stix2-patterns``,
``run_validator(p, stix_version='2.1')``) and written with its verdict, one JSON object per line:

    {"pattern": "[a:b = 1]", "reference": "valid"}
    {"pattern": "[a:b = 007]", "reference": "invalid"}
    {"pattern": "[a:b[-1] = 1]", "reference": "raises AttributeError"}

The Rust test ``crates/stix/tests/pattern_corpus.rs`` compares our verdicts with these (listed
disagreements in ``disagreements.jsonl`` next to the corpus), and ``test_reference_verdicts.py``
re-runs the reference to prove the recorded verdicts are still what it says.

The corpus is built systematically (every operator, qualifier, literal kind, object-path form,
keyword spelling, comment and white-space position, hash algorithm) and then extended with
seeded random mutations of valid patterns, so the output is the same on every run.

Usage: python tests/patterns/generate_corpus.py [OUTPUT]   (default: the committed corpus)
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "crates" / "stix" / "tests" / "corpus" / "patterns.jsonl"

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TS = "t'2020-01-01T00:00:00Z'"
TS2 = "t'2020-01-02T00:00:00.123Z'"


def reference_verdict(pattern: str) -> str:
    """The reference validator's verdict: valid, invalid, or the exception it raises."""
    from stix2patterns.validator import run_validator

    try:
        errors = run_validator(pattern, stix_version="2.1")
    except Exception as exc:  # the reference crashes on some inputs; record how
        return f"raises {type(exc).__name__}"
    return "invalid" if errors else "valid"


LITERALS = [
    # integers
    "1", "0", "-0", "+1", "-1", "42", "007", "01", "123456789012345678901234567890", "1e5",
    "0x10", "1_000",
    # floats
    "1.5", "-1.5", "+1.5", ".5", "-.5", "+.5", "1.", "007.5", "1.2.3", "1.5e3",
    # strings
    "'x'", "''", "'it\\'s'", "'a\\\\b'", "'a\\nb'", "'unterminated", "'\\'", "'\\\\'", "'ü ☃ 𝄞'",
    "'with ] and [ and ( and )'", "'/* not a comment */'", "'// nor this'", "\"double\"",
    "'line\nbreak'", "'tab\there'",
    # binary
    "b'AAAA'", "b'AAA='", "b'AA=='", "b'A==='", "b''", "b'A'", "b'AAAAAA=='", "b'AAAA='",
    "b'+/+/'", "b'AA-A'", "B'AAAA'",
    # hex
    "h''", "h'00'", "h'0aFf'", "h'abc'", "h'zz'", "H'00'", "h'0 0'",
    # timestamps
    TS, TS2, "t'2020-01-01T00:00:00.Z'", "t'2020-01-01T00:00:00'", "t'2020-01-01 00:00:00Z'",
    "T'2020-01-01T00:00:00Z'", "t'2020-01-01t00:00:00z'", "t'2020-01-01T00:00:00+00:00'",
    # booleans and other words
    "true", "false", "TRUE", "True", "FALSE", "null", "none", "x",
]

ORDER_OPERATORS = ["<", "<=", ">", ">="]
EQUALITY_OPERATORS = ["=", "==", "!=", "<>"]
BAD_OPERATORS = ["=<", "=>", "!", "<<", "===", "= =", "! =", "~", "NE", "EQ"]

PATHS = [
    "a:b", "ipv4-addr:value", "x-custom-type:x_prop", "a:b.c", "a:b.'c d'", "a:'b'", "a:'b c'",
    "a:b[0]", "a:b[*]", "a:b[+1]", "a:b[-1]", "a:b.c[-5].d", "a:b[01]", "a:b[1.5]", "a:b['x']", "a:b[]", "a:b[*][0][*]",
    "a:b.c-d", "a:b.'c-d'", "a-b:c", "a:b-c", "_a:_b", "1a:b", "a:1b", "a::b", "a:b.", "a:b..c",
    "a:b[0].c", "a:b.[0]", "a:b .c", "a : b", "LAST:b", "a:AND", "a:'AND'", "a:true", "a:'true'",
    "a:b.''", "a:''", "a-:b", "a:b.c.d.e.f.g", "network-traffic:extensions.'http-request-ext'.request_header.'Accept-Encoding'",
    "file:parent_directory_ref.path", "email-message:from_ref.value", "a:b.'it\\'s'", "a:b.\"c\"",
    "a", ":b", "a:", "A:B", "a:B.C",
]

QUALIFIERS = [
    "WITHIN 5 SECONDS", "WITHIN 0 SECONDS", "WITHIN +5 SECONDS", "WITHIN -5 SECONDS",
    "WITHIN 1.5 SECONDS", "WITHIN .5 SECONDS", "WITHIN -.5 SECONDS", "WITHIN 05 SECONDS",
    "WITHIN 5 SECOND", "WITHIN 5", "WITHIN SECONDS", "within 5 seconds", "WITHIN 5SECONDS",
    "WITHIN '5' SECONDS", "REPEATS 2 TIMES", "REPEATS 0 TIMES", "REPEATS +2 TIMES",
    "REPEATS -2 TIMES", "REPEATS 1.5 TIMES", "REPEATS 2 TIME", "REPEATS 2", "repeats 2 times",
    f"START {TS} STOP {TS2}", f"START {TS2} STOP {TS}", f"START {TS} STOP {TS}",
    "START '2020-01-01T00:00:00Z' STOP '2020-01-02T00:00:00Z'", f"START {TS}", f"STOP {TS}",
    f"START {TS} {TS2}", f"start {TS} stop {TS2}", f"START {TS} STOP 5", "LAST 5 SECONDS",
]

VALID_QUALIFIERS = ["WITHIN 5 SECONDS", "REPEATS 2 TIMES", f"START {TS} STOP {TS2}"]

# (key spellings, valid value, a wrong value) per hash algorithm the reference checks.
HASHES = [
    (["MD5", "md5", "'MD5'"], MD5, MD5[:-1]),
    (["'SHA-1'", "SHA1", "'sha-1'"], SHA1, MD5),
    (["'SHA-224'", "sha224"], "a" * 56, "a" * 55),
    (["'SHA-256'", "SHA256", "'sha-256'", "sha256"], SHA256, SHA256 + "0"),
    (["'SHA-384'", "sha384"], "b" * 96, "b" * 95 + "g"),
    (["'SHA-512'", "SHA512"], "c" * 128, "c" * 64),
    (["'SHA3-224'"], "d" * 56, "d" * 57),
    (["'SHA3-256'", "sha3256"], "e" * 64, "e" * 63),
    (["'SHA3-384'"], "f" * 96, "f" * 97),
    (["'SHA3-512'", "'sha3-512'"], "A" * 128, "A" * 129),
    (["'RIPEMD-160'", "RIPEMD160"], "1" * 40, "1" * 41),
    (["WHIRLPOOL", "whirlpool"], "2" * 128, "2" * 127),
    (["MD6"], MD5, "nope"),
    (["SSDEEP", "ssdeep"], "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C", "has space"),
]

REALISTIC = [
    "[ipv4-addr:value = '198.51.100.1']",
    "[ipv4-addr:value = '198.51.100.0/24']",
    "[ipv6-addr:value = '2001:db8::/32']",
    "[domain-name:value = 'evil.example.com']",
    "[url:value = 'http://example.com/foo?query=bar&x=1']",
    "[url:value = 'https://example.com/a=b']",
    "[email-addr:value = 'admin@example.com']",
    "[mac-addr:value = 'd2:fb:49:24:37:18']",
    "[autonomous-system:number = 64496]",
    "[user-account:user_id = '1001']",
    "[software:name = 'curl']",
    "[file:name = 'invoice.pdf.exe']",
    "[file:size > 1048576 AND file:name MATCHES '\\\\.exe$']",
    f"[file:hashes.MD5 = '{MD5}']",
    f"[file:hashes.'SHA-1' = '{SHA1}']",
    f"[file:hashes.'SHA-256' = '{SHA256}']",
    f"[x509-certificate:hashes.'SHA-1' = '{SHA1}']",
    "[x509-certificate:issuer = 'CN=Evil CA' AND x509-certificate:serial_number = '01:02']",
    "[domain-name:value = 'example.com'] AND [ipv4-addr:value = '203.0.113.7']",
    "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '203.0.113.33/32']",
    "[network-traffic:dst_port = 443 AND network-traffic:protocols[*] = 'tcp']",
    "[network-traffic:src_ref.value ISSUBSET '10.0.0.0/8']",
    "[ipv4-addr:value ISSUPERSET '10.1.2.3']",
    "[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\Software\\\\Evil']",
    "[process:command_line LIKE '%powershell% -enc %']",
    "[process:name = 'cmd.exe' AND process:parent_ref.name = 'winword.exe']",
    "[email-message:subject MATCHES '(?i)invoice' AND email-message:from_ref.value LIKE '%@example.com']",
    "[email-message:body_multipart[*].body_raw_ref.name = 'payload.doc']",
    "[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]",
    "[artifact:payload_bin = b'TWFsd2FyZQ==']",
    "[artifact:hashes.'SHA-256' = '" + SHA256 + "']",
    "[user-account:account_login = 'root' AND user-account:is_privileged = true]",
    f"[ipv4-addr:value = '203.0.113.1'] REPEATS 5 TIMES WITHIN 180 SECONDS",
    f"([ipv4-addr:value = '203.0.113.1'] FOLLOWEDBY [domain-name:value = 'c2.example']) WITHIN 600 SECONDS",
    f"[network-traffic:dst_port IN (80, 443, 8080)] START {TS} STOP {TS2}",
    "[file:created < t'2021-01-01T00:00:00Z' AND file:created >= t'2020-01-01T00:00:00.5Z']",
    "[mutex:name = 'Global\\\\Evil' OR mutex:name = 'Local\\\\Evil']",
    "[directory:path = 'C:\\\\Windows\\\\Temp\\\\']",
    "[x-vendor-object:x_score >= 75]",
    "[ipv4-addr:value = '6.6.6.6']",
    "[ipv4-addr:value != '1.1.1.1']",
    "[ipv4-addr:value NOT = '1.1.1.1']",
    "[ipv4-addr:value IN ('1.1.1.1', '2.2.2.2')]",
    "[ipv4-addr:value = '1.1.1.1' OR ipv4-addr:value = '2.2.2.2']",
    "[ipv4-addr:value = '6.6.6.6' AND domain-name:value = 'evil.com']",
    "[file:hashes.md5 ='d41d8cd98f00b204e9800998ecf8427e']",
    "Some string",
    "6.6.6.6 = ipv4-addr:value",
    "ipv4-addr:value = '6.6.6.6'",
    "[ipv4-addr:value = '6.6.6.6'",
    "ipv4-addr:value = '6.6.6.6']",
    "[ipv4-addr:value = 6.6.6.6]",
    "[ipv4-addr:value == '6.6.6.6']",
    "alert tcp any any -> any any (msg:\"x\"; sid:1;)",
    "rule evil { condition: true }",
]

MISC = [
    "", " ", "\t\n", "[", "]", "[]", "()", "([])", "[()]", "(", ")", "[a:b]", "[a:b =]", "[= 1]",
    "[a:b = 1", "a:b = 1]", "[a:b = 1]]", "[[a:b = 1]]", "[a:b = 1][c:d = 2]", "[a:b = 1] [c:d = 2]",
    "[a:b = 1],[c:d = 2]", "[a:b = 1];", "[a:b = 1] ]", "[a:b = 1] AND", "AND [a:b = 1]",
    "[a:b = 1] AND AND [c:d = 2]", "[a:b = 1 AND]", "[AND a:b = 1]", "[a:b = 1 c:d = 2]",
    "[a:b = 1] NOT [c:d = 2]", "NOT [a:b = 1]", "[NOT a:b = 1]", "[NOT (a:b = 1)]",
    "[a:b = 1 FOLLOWEDBY c:d = 2]", "[a:b = 1] FOLLOWEDBY", "[a:b = 1] WITHIN 5 SECONDS AND",
    "[a:b = 1] @", "@[a:b = 1]", "[a:b = 1] ^", "[a:b = 1] /", "[a:b = 1] *", "[a:b = 1] \\",
    "[a:b = 1]\x00", "\x00[a:b = 1]", "[a:b = 1]\x1c", "\x1c[a:b = 1]", "\ufeff[a:b = 1]",
    "[a:b = 1]\u200b", "[a:b\u00a0= 1]", "[a:b = 1]\u3000", "\u2028[a:b = 1]\u2029",
    "[a:b = 1]\u0085", "[a:b = 1]\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f",
    "[a:b = 1]\x0b\x0c\r", "[a:b = 'ü']", "[ü:b = 1]", "[a:ü = 1]", "[a:b = 1] ü",
    "[a:b = 1] // trailing", "[a:b = 1] // trailing\n", "[a:b = 1]//", "[a:b = 1] /**/",
    "[a:b = 1] /* c */ AND [c:d = 2]", "[a:b = /* c */ 1]", "[a:b /* c */ = 1]", "[/* c */ a:b = 1]",
    "/* c */ [a:b = 1]", "/**/[a:b = 1]", "// c\n[a:b = 1]", "(/* c */[a:b = 1])",
    "( /* c */ [a:b = 1])", "([a:b = 1] /* c */)", "[a:b = 1] /* unterminated", "[a:b = 1] */",
    "[a:b = 1] /* a */ */", "[a:b = 1] /* /* nested */ */", "[a:b = 1 // c\n]", "[a:b = 1 // c]",
    "[a:b = 1]\n// c", "  ([a:b = 1])  ", "((([a:b = 1])))", "([a:b = 1]", "[a:b = 1])",
    "([a:b = 1]) AND ([c:d = 2])", "[(a:b = 1)]", "[((a:b = 1))]", "[(a:b = 1]", "[a:b = 1)]",
    "[(a:b = 1) AND (c:d = 2)]", "[(a:b = 1 AND c:d = 2) OR e:f = 3]",
    "[a:b = 1 AND (c:d = 2 OR e:f = 3)]", "[a:b = 1 OR c:d = 2 AND e:f = 3]",
    "[a:b = 1] OR [c:d = 2] AND [e:f = 3]", "[a:b = 1] FOLLOWEDBY [c:d = 2] OR [e:f = 3]",
    "([a:b = 1] FOLLOWEDBY [c:d = 2]) OR [e:f = 3]", "[a:b = 1] AND ([c:d = 2] OR [e:f = 3])",
    "[a:b = 1] and [c:d = 2]", "[a:b = 1] And [c:d = 2]", "[a:b = 1] or [c:d = 2]",
    "[a:b = 1] followedby [c:d = 2]", "[a:b = 1] FollowedBy [c:d = 2]",
    "[a:b = 1] FOLLOWED BY [c:d = 2]", "[a:b = 1 and c:d = 2]", "[a:b = 1 or c:d = 2]",
    "[a:b not = 1]", "[a:b in (1)]", "[a:b like 'x']", "[a:b matches 'x']", "[exists a:b]",
    "[a:b = 1]AND[c:d = 2]", "[a:b=1]OR[c:d=2]", "[a:b=1]FOLLOWEDBY[c:d=2]",
    "[a:b = 1] ANDNOT [c:d = 2]", "[a:b = 1] AND-x [c:d = 2]", "[a:bAND c:d = 1]",
    "[a:b = 'x'AND c:d = 1]", "[a:b = 1AND c:d = 2]", "[a:b = trueAND c:d = 2]",
    "[a:b = 1] WITHIN 5 SECONDSAND [c:d = 2]",
]

EXISTS_FORMS = [
    "[EXISTS a:b]", "[NOT EXISTS a:b]", "[EXISTS NOT a:b]", "[a:b EXISTS]", "[EXISTS (a:b)]",
    "[EXISTS a:b = 1]", "[EXISTS]", "[NOT NOT EXISTS a:b]", "[EXISTS a:b AND EXISTS c:d]",
    "[EXISTS a:b[*].c]", "[EXISTS a:b[-1]]", "[NOT EXISTS file:hashes[0]]", "[EXISTS a:'b']",
    "[EXISTS a-b:c]", "[(EXISTS a:b)]", "[a:b = 1 OR NOT EXISTS a:c]", "[NOTEXISTS a:b]",
]

SETS = [
    "()", "( )", "(1)", "(1, 2)", "(1,2,3)", "(1,)", "(,1)", "(1 2)", "('a', 'b')",
    "('a', 1, true, 1.5, h'00', b'AAAA', " + TS + ")", "((1))", "[1]", "1", "'a'", "(1, (2))",
    "(true)", "(-1, -.5)", "('it\\'s')", "(1,,2)", "(", "(1",
]


def hash_cases() -> list[str]:
    out = []
    for keys, good, bad in HASHES:
        for key in keys:
            out.append(f"[file:hashes.{key} = '{good}']")
            out.append(f"[file:hashes.{key} = '{bad}']")
        key = keys[0]
        out += [
            f"[file:hashes.{key} != '{good}']",
            f"[file:hashes.{key} = '{good.upper()}']",
            f"[file:hashes.{key} IN ('{good}')]",
            f"[file:hashes.{key} IN ('{good}', '{bad}')]",
            f"[file:hashes.{key} LIKE '{good[:8]}%']",
            f"[file:hashes.{key} MATCHES '^{good[:8]}']",
            f"[x509-certificate:hashes.{key} = '{good}']",
            f"[artifact:hashes.{key} = '{bad}']",
            f"[EXISTS file:hashes.{key}]",
        ]
    out += [
        f"[file:hashes.'{MD5}' = 'x']", "[file:hashes.TLSH = 'anything goes']",
        "[file:hashes.tlsh = 'x']", "[file:hashes.x_custom = 'anything']", "[file:hashes = 'x']",
        "[file:hashes[*] = 'x']", "[file:hashes[0] = 'x']", "[file:hashes[+1] = 'x']",
        "[file:hashes[-1] = 'x']", "[file:Hashes.MD5 = 'x']", "[file:'hashes'.MD5 = 'x']",
        "[file:hashes.'MD5' = 'x']", "[file:hashes.'M\\'D5' = 'x']", "[file:hashes.SHA_256 = 'x']",
        "[file:hashes.'SHA--256' = 'x']", "[file:hashes.'\u017fha1' = 'x']",
        f"[file:hashes.MD5 = '{MD5}\n']", f"[file:hashes.MD5 = '\n{MD5}']",
        f"[file:hashes.MD5 = ' {MD5}']", f"[file:hashes.MD6 = '{MD5}XYZ']",
        f"[file:hashes.MD6 = '{'a' * 40}']", f"[file:hashes.MD6 = '\n    {'a' * 64}']",
        f"[file:hashes.MD5 = h'{MD5}']", "[file:hashes.MD5 = 12345678901234567890123456789012]",
        "[file:hashes.MD5 = 1]", "[file:hashes.MD5 = true]", f"[file:hashes.MD5 > '{MD5}']",
        f"[file:hashes.MD5 = '{MD5}' AND file:hashes.'SHA-1' = 'nope']",
        "[file:hashes.SSDEEP = 1]", "[file:hashes.SSDEEP = true]", "[file:hashes.SSDEEP = h'00']",
        "[file:hashes.SSDEEP = b'AAAA']", "[file:hashes.SSDEEP = +12]", "[file:hashes.SSDEEP = -12]",
        f"[file:hashes.SSDEEP = '{'a' * 128}']", f"[file:hashes.SSDEEP = '{'a' * 129}']",
        "[file:hashes.SSDEEP = '']", f"[file:hashes.SSDEEP = {TS}]",
        "[file:hashes.MD5 IN ()]", f"[file:extensions.'x'.hashes.MD5 = '{MD5}']",
        "[file:extensions.'x'.hashes.MD5 = 'x']", "[x:hashes.list.MD5 = 'x']",
        "[x:hashes.list[0] = 'x']", "[x:hashes.list[*] = 'x']", "[x:MD5 = 'x']",
        "[x:md5.hashes = 'x']",
    ]
    return out


def qualifier_cases() -> list[str]:
    out = []
    bases = ["[a:b = 1]", "([a:b = 1])", "([a:b = 1] AND [c:d = 2])", "[a:b = 1] AND [c:d = 2]"]
    for base, qualifier in itertools.product(bases, QUALIFIERS):
        out.append(f"{base} {qualifier}")
    for base in bases[:2]:
        for q1, q2 in itertools.product(VALID_QUALIFIERS, repeat=2):
            out.append(f"{base} {q1} {q2}")
        out.append(f"{base} {' '.join(VALID_QUALIFIERS)}")
    out += [
        "([a:b = 1] WITHIN 1 SECONDS) WITHIN 2 SECONDS",
        "(([a:b = 1]) WITHIN 1 SECONDS) WITHIN 2 SECONDS WITHIN 3 SECONDS",
        "[a:b = 1] WITHIN 1 SECONDS REPEATS 2 TIMES WITHIN 3 SECONDS",
        "[a:b = 1] WITHIN 1 SECONDS AND [c:d = 2] WITHIN 1 SECONDS",
        "[a:b = 1] REPEATS 2 TIMES FOLLOWEDBY [c:d = 2] REPEATS 2 TIMES REPEATS 3 TIMES",
        "[a:b = 1] WITHIN 99999999999999999999 SECONDS",
        "[a:b = 1] REPEATS 99999999999999999999 TIMES",
        "[a:b = 1] WITHIN 1.5.5 SECONDS",
        "WITHIN 5 SECONDS [a:b = 1]",
        "[a:b = 1 WITHIN 5 SECONDS]",
        "[a:b = 1] (WITHIN 5 SECONDS)",
    ]
    return out


def comparison_cases() -> list[str]:
    out = []
    for op, literal in itertools.product(EQUALITY_OPERATORS + ORDER_OPERATORS, LITERALS):
        out.append(f"[a:b {op} {literal}]")
    for op in EQUALITY_OPERATORS + ORDER_OPERATORS + ["IN", "LIKE", "MATCHES", "ISSUBSET", "ISSUPERSET"]:
        operand = "(1)" if op == "IN" else "'x'"
        out += [f"[a:b NOT {op} {operand}]", f"[a:b not {op} {operand}]", f"[NOT a:b {op} {operand}]",
                f"[a:b {op} NOT {operand}]", f"[a:b NOT NOT {op} {operand}]", f"[a:b {op}]"]
    for op in BAD_OPERATORS:
        out.append(f"[a:b {op} 1]")
    for op in ["LIKE", "MATCHES", "ISSUBSET", "ISSUPERSET"]:
        for operand in ["'x'", "''", "'%a_b%'", "'^[a-z]+$'", "'10.0.0.0/8'", "1", "1.5", "true",
                        "h'00'", "b'AAAA'", TS, "(1)", "('x')", "x"]:
            out.append(f"[a:b {op} {operand}]")
    for s in SETS:
        out.append(f"[a:b IN {s}]")
        out.append(f"[a:b NOT IN {s}]")
    for path in PATHS:
        out.append(f"[{path} = 1]")
    out += EXISTS_FORMS
    return out


def whitespace_and_nesting_cases() -> list[str]:
    out = []
    base = "[a:b = 'c'] AND [d:e = 1]"
    for space in [" ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\u0085", "\u00a0", "\u1680", "\u2000",
                  "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\x1c",
                  "\x1f", "\ufeff"]:
        out.append(space + base + space)
        out.append(base.replace(" ", space))
    for depth in [1, 2, 10, 50, 100, 200]:
        out.append("(" * depth + "[a:b = 1]" + ")" * depth)
        out.append("[" + "(" * depth + "a:b = 1" + ")" * depth + "]")
    for depth in [250, 300]:
        out.append("(" * depth + "[a:b = 1]" + ")" * depth)
    out.append("(" * 10 + "[a:b = 1]" + ")" * 9)
    out.append("[" + "(" * 10 + "a:b = 1" + ")" * 11 + "]")
    out.append(" AND ".join(["[a:b = 1]"] * 200))
    out.append("[" + " OR ".join(f"a:b = {i}" for i in range(200)) + "]")
    out.append("[a:b IN (" + ", ".join(str(i) for i in range(300)) + ")]")
    out.append("[a:b" + ".c" * 200 + " = 1]")
    out.append("[a:b = '" + "x" * 5000 + "']")
    return out


def timestamp_cases() -> list[str]:
    out = []
    good = "2020-01-01T00:00:00Z"
    variants = [
        good, "2020-12-31T23:59:59Z", "2020-02-31T00:00:00Z", "2020-00-01T00:00:00Z",
        "2020-13-01T00:00:00Z", "2020-01-00T00:00:00Z", "2020-01-32T00:00:00Z",
        "2020-01-01T24:00:00Z", "2020-01-01T00:60:00Z", "2020-01-01T00:00:60Z",
        "2020-01-01T00:00:61Z", "2020-01-01T00:00:00.0Z", "2020-01-01T00:00:00.123456789123Z",
        "20-01-01T00:00:00Z", "02020-01-01T00:00:00Z", "2020-1-01T00:00:00Z", "2020-01-01T0:00:00Z",
        "2020-01-01", "2020-01-01T00:00Z", "2020-01-01T00:00:00.Z", "9999-12-31T23:59:60.999Z",
        "0000-01-01T00:00:00Z",
    ]
    for v in variants:
        out.append(f"[a:b = t'{v}']")
        out.append(f"[a:b = 1] START t'{v}' STOP t'{good}'")
    return out


VALID_SEEDS = [
    "[a:b = 'c']",
    "[ipv4-addr:value = '1.2.3.4'] AND [domain-name:value = 'x.com']",
    "[file:name = 'it\\'s' OR file:size > 10] WITHIN 5 SECONDS",
    f"[file:hashes.MD5 = '{MD5}']",
    f"([a:b IN (1, 'x', true)] FOLLOWEDBY [c:d LIKE 'x%']) REPEATS 2 TIMES START {TS} STOP {TS2}",
    "[NOT EXISTS a:b.c[*]] OR [x-y:'z'[0] != h'00ff']",
    "[a:b = b'AAAA' AND (c:d = -1.5 OR e:f <= +3)] // comment",
]

MUTATION_TOKENS = [
    " AND ", " OR ", " NOT ", " FOLLOWEDBY ", " WITHIN 5 SECONDS", "]", "[", "(", ")", "'", "\\",
    "=", "==", "!=", "<", ">", ".", ",", ":", "-", "+", "0", "1.5", " true ", "t'", "h'", "b'",
    "/*", "*/", "//", " ", "\n", "*", "x", "EXISTS ", "'a'", "''",
]


def mutations(count: int) -> list[str]:
    rng = random.Random(20260424)
    out = []
    while len(out) < count:
        pattern = rng.choice(VALID_SEEDS)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if not pattern:
                break
            i = rng.randrange(len(pattern) + 1)
            kind = rng.randrange(5)
            if kind == 0:  # delete a character
                i = min(i, len(pattern) - 1)
                pattern = pattern[:i] + pattern[i + 1:]
            elif kind == 1:  # insert a token
                pattern = pattern[:i] + rng.choice(MUTATION_TOKENS) + pattern[i:]
            elif kind == 2:  # swap two neighbours
                i = min(i, len(pattern) - 2)
                if i >= 0:
                    pattern = pattern[:i] + pattern[i + 1] + pattern[i] + pattern[i + 2:]
            elif kind == 3:  # change the case of one character
                i = min(i, len(pattern) - 1)
                pattern = pattern[:i] + pattern[i].swapcase() + pattern[i + 1:]
            else:  # truncate
                pattern = pattern[:i]
        out.append(pattern)
    return out


def build_patterns() -> list[str]:
    """Every corpus pattern, in a fixed order, without duplicates."""
    groups = [
        REALISTIC, MISC, comparison_cases(), qualifier_cases(), hash_cases(), timestamp_cases(),
        whitespace_and_nesting_cases(), mutations(400),
    ]
    seen: set[str] = set()
    out = []
    for pattern in itertools.chain.from_iterable(groups):
        if pattern not in seen:
            seen.add(pattern)
            out.append(pattern)
    return out


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as f:
        for pattern in build_patterns():
            record = {"pattern": pattern, "reference": reference_verdict(pattern)}
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
