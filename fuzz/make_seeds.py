#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tokens for `verify` into
fuzz/corpus/verify/, payloads for `payload` into fuzz/corpus/payload/.

Run from the repository root: python3 fuzz/make_seeds.py
The tokens are signed with the key in fuzz_targets/verify.rs and judged at its fixed
instant, so the valid ones stay valid. A payload seed is one byte choosing the header
(0 ours, 1 PyJWT's order, 2 the original design's) and the payload's JSON.
"""

import base64
import hashlib
import hmac
import json
import pathlib

KEY = b"fuzz-corpus-key-0123456789abcdefghij"
NOW = 1_800_000_000
KID = base64.urlsafe_b64encode(hashlib.sha256(KEY).digest()).rstrip(b"=").decode()[:8]
OUT = pathlib.Path(__file__).parent / "corpus" / "verify"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header, payload) -> str:
    head = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    signing_input = f"{b64(head)}.{b64(body)}"
    tag = hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(tag)}"


ours = {"alg": "HS256", "typ": "JWT", "kid": KID}
claims = {"sub": "42", "user_id": 42, "name": "ann", "role": "admin", "iat": NOW - 60,
          "exp": NOW + 3600, "iss": "latchkey", "auth_time": NOW - 600, "ver": 1}
seeds = {
    "valid_ours": token(ours, claims),
    "valid_legacy": token({"alg": "HS256", "typ": "JWT"},
                          {"name": "ann", "role": "admin", "user_id": 42, "exp": NOW + 3600,
                           "iss": "latchkey"}),
    "valid_pyjwt_order": token({"alg": "HS256", "kid": KID, "typ": "JWT"}, claims),
    "valid_ours_otp": token(ours, dict(claims, amr=["pwd", "otp"])),
    "valid_escapes_extra": token({"alg": "HS256"},
                                 dict(claims, name="Zo\u00eb \"q\"", nbf=NOW, scope=["a", 1])),
    "expired": token(ours, dict(claims, exp=NOW - 100)),
    "duplicate_exp": token(ours, b'{"exp":1,"exp":2}'),
    "alg_none": b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims).encode()) + ".",
    "crit": token({"alg": "HS256", "crit": ["x"]}, claims),
    "rfc7515_a1": "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    "dots": "..",
}
OUT.mkdir(parents=True, exist_ok=True)
for name, text in seeds.items():
    (OUT / name).write_text(text)

PAYLOADS = pathlib.Path(__file__).parent / "corpus" / "payload"
compact = {"separators": (",", ":"), "ensure_ascii": False}
payloads = {
    "ours": b"\x00" + json.dumps(dict(claims, amr=["pwd"]), **compact).encode(),
    "ours_otp": b"\x00" + json.dumps(dict(claims, amr=["pwd", "otp"]), **compact).encode(),
    "ours_before_amr": b"\x00" + json.dumps(claims, **compact).encode(),
    "ours_non_ascii": b"\x00" + json.dumps(dict(claims, name="张三"), **compact).encode(),
    # PyJWT writes with json.dumps defaults: spaces, and non-ASCII as \u escapes.
    "pyjwt_escaped": b"\x02" + json.dumps({"name": "张三", "role": "user", "user_id": 7,
                                           "exp": NOW + 3600, "iss": "latchkey"}).encode(),
    "extra_members": b"\x01" + json.dumps(dict(claims, nbf=NOW, scope=["a", {"b": None}],
                                               amr=["otp", "pwd"], name="a\"b\\c\n")).encode(),
}
PAYLOADS.mkdir(parents=True, exist_ok=True)
for name, data in payloads.items():
    (PAYLOADS / name).write_bytes(data)
