"""The examples' identity options (``--jwt``, ``--bundle``, ``--audience``), run as subprocesses
against a node on a free port: RS256 JWT files and a SPIRE-style bundle (trust domain → base64
JWKS) are made here, the tokens signed in pure Python with the test RSA keys in tests/data/jwt."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest

import example_helpers as ex

KEYS = Path(__file__).resolve().parents[1] / "data" / "jwt"

AUDIENCE = "slim-examples"
TRUST_DOMAIN = "example.org"
# DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER element at ``pos``: (tag, content, position after it)."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, data[pos : pos + length], pos + length


def _der_sequence(content: bytes) -> list[tuple[int, bytes]]:
    items, pos = [], 0
    while pos < len(content):
        tag, value, pos = _der(content, pos)
        items.append((tag, value))
    return items


def _rsa_private(file: str) -> tuple[int, int, int]:
    """(n, e, d) of a PKCS#8 PEM RSA key."""
    body = "".join(ln for ln in (KEYS / file).read_text().splitlines() if not ln.startswith("-----"))
    _, pkcs8, _ = _der(base64.b64decode(body), 0)
    octets = _der_sequence(pkcs8)[2][1]  # version, algorithm, privateKey OCTET STRING
    _, rsa, _ = _der(octets, 0)
    ints = [int.from_bytes(v, "big") for _, v in _der_sequence(rsa)]
    return ints[1], ints[2], ints[3]  # version, n, e, d, ...


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _int_bytes(i: int) -> bytes:
    return i.to_bytes((i.bit_length() + 7) // 8, "big")


def rs256_token(key_file: str, kid: str, claims: dict) -> str:
    """An RS256 JWT (RSASSA-PKCS1-v1_5 with SHA-256) signed with ``key_file``."""
    n, _e, d = _rsa_private(key_file)
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
    k = (n.bit_length() + 7) // 8
    t = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    signature = pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
    return f"{signing_input.decode()}.{_b64url(signature)}"


def spire_bundle(key_file: str, kid: str) -> dict[str, str]:
    """``{trust_domain: base64(JWKS)}`` holding the public half of ``key_file``."""
    n, e, _ = _rsa_private(key_file)
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": kid,
                "n": _b64url(_int_bytes(n)),
                "e": _b64url(_int_bytes(e)),
            }
        ]
    }
    return {TRUST_DOMAIN: base64.b64encode(json.dumps(jwks).encode()).decode()}


def _svid(tmp: Path, name: str, audience: str = AUDIENCE, key_file: str = "rsa_a.key") -> str:
    """A JWT-SVID-like token file for ``name``."""
    now = int(time.time())
    claims = {
        "iss": f"https://{TRUST_DOMAIN}",
        "sub": f"spiffe://{TRUST_DOMAIN}/{name}",
        "aud": [audience],
        "iat": now,
        "exp": now + 3600,
    }
    path = tmp / f"{name}.jwt"
    path.write_text(rs256_token(key_file, "key-a", claims) + "\n")
    return str(path)


@pytest.fixture
def bundle(tmp_path: Path) -> str:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(spire_bundle("rsa_a.key", "key-a")))
    return str(path)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["anycast", "unicast-mls"])
async def test_point_to_point_with_jwt_and_bundle(tmp_path: Path, bundle: str, mode: str) -> None:
    deadline = time.monotonic() + 60
    procs: list[ex.Proc] = []
    extra = ["--enable-mls"] if mode == "unicast-mls" else []
    mode = mode.split("-")[0]
    try:
        node, client = await ex.example_node(deadline)
        procs.append(node)
        common = ["--slim", client, "--bundle", bundle, "--audience", AUDIENCE, *extra]
        await ex.point_to_point_exchange(
            procs,
            deadline,
            mode,
            "signed hello",
            ["--jwt", _svid(tmp_path, "alice"), *common],
            ["--jwt", _svid(tmp_path, "bob"), *common],
        )
    finally:
        await ex.stop_all(procs)


@pytest.mark.asyncio
async def test_multicast_with_jwt_and_bundle(tmp_path: Path, bundle: str) -> None:
    deadline = time.monotonic() + 60
    procs: list[ex.Proc] = []
    try:
        node, client = await ex.example_node(deadline)
        procs.append(node)
        common = ["--slim", client, "--bundle", bundle, "--audience", AUDIENCE, "--enable-mls"]
        await ex.multicast_line(
            procs,
            deadline,
            "jwt line",
            ["--jwt", _svid(tmp_path, "m1"), *common],
            ["--jwt", _svid(tmp_path, "mod"), *common],
        )
    finally:
        await ex.stop_all(procs)


@pytest.mark.asyncio
async def test_token_signed_by_a_key_outside_the_bundle_is_not_delivered(tmp_path: Path, bundle: str) -> None:
    deadline = time.monotonic() + 60
    procs: list[ex.Proc] = []
    try:
        node, client = await ex.example_node(deadline)
        procs.append(node)
        common = ["--slim", client, "--bundle", bundle, "--audience", AUDIENCE]
        alice = await ex.start(
            "alice",
            "point_to_point.py",
            "--local",
            "agntcy/ns/alice",
            "--jwt",
            _svid(tmp_path, "alice"),
            *common,
        )
        procs.append(alice)
        await alice.wait_for(r"Connected to", deadline)
        # Well-formed, right issuer and audience, but signed with a key the bundle does not hold.
        mallory = await ex.start(
            "mallory",
            "point_to_point.py",
            "--local",
            "agntcy/ns/mallory",
            "--remote",
            "agntcy/ns/alice",
            "--message",
            "forged",
            "--iterations",
            "1",
            "--jwt",
            _svid(tmp_path, "mallory", key_file="rsa_b.key"),
            *common,
        )
        procs.append(mallory)
        assert await ex.exit_code(mallory, ex.remaining(deadline)) == 1, mallory.lines
        assert not any("received (from session" in line for line in mallory.lines), mallory.lines
        assert not any("forged" in line for line in alice.lines), alice.lines
    finally:
        await ex.stop_all(procs)


@pytest.mark.asyncio
async def test_wrong_audience_is_refused_clearly(tmp_path: Path, bundle: str) -> None:
    # Bob's token is for another audience than the one the apps verify with.
    proc = await ex.start(
        "bob",
        "point_to_point.py",
        "--local",
        "agntcy/ns/bob",
        "--jwt",
        _svid(tmp_path, "bob", audience="elsewhere"),
        "--bundle",
        bundle,
        "--audience",
        AUDIENCE,
    )
    assert await ex.exit_code(proc, 30) == 1
    refusal = [line for line in proc.lines if line.startswith("error:")]
    assert refusal and "issued for elsewhere, not for the audience slim-examples" in refusal[0], proc.lines
    assert not any("Traceback" in line or "Connected to" in line for line in proc.lines), proc.lines


@pytest.mark.asyncio
async def test_no_identity_is_refused_clearly() -> None:
    proc = await ex.start("bob", "point_to_point.py", "--local", "agntcy/ns/bob")
    assert await ex.exit_code(proc, 30) == 1
    assert "error: Either JWT or bundle must be provided, or a shared secret." in proc.lines, proc.lines
    assert not any("Traceback" in line for line in proc.lines), proc.lines
