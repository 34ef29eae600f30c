"""Tokens as identity providers issue them, against a real `signal serve`: keys generated here (RSA, P-256,
Ed25519 with Python's `cryptography`), given to the hub as a JWKS file, a PEM file, or a JWKS served over
HTTP by a tiny server started here (`--jwks-url`), tokens signed here (RS256, ES256, EdDSA, with `kid`),
and every refusal seen by a client as the 4001 close reason."""

import asyncio
import base64
import http.server
import json
import threading
import time

import pytest
import websockets
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import free_port

AUDIENCE = "signal-app"
ISSUER = "https://id.example.test/"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n):
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Key:
    """A private key of the test's identity provider, with its public JWK and PEM."""

    def __init__(self, kind, kid):
        self.kind, self.kid = kind, kid
        if kind == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = self.private.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": uint(numbers.n), "e": uint(numbers.e)}
        elif kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            numbers = self.private.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(raw)}
        self.pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def sign(self, claims, kid=True, alg=None):
        header = {"alg": alg or self.kind, "typ": "JWT"}
        if kid:
            header["kid"] = self.kid if kid is True else kid
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()
        if self.kind == "RS256":
            signature = self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif self.kind == "ES256":
            r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.private.sign(signing_input)
        return f"{signing_input.decode()}.{b64(signature)}"


def claims(sub="alice", **extra):
    now = int(time.time())
    return {"sub": sub, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER, "rooms": ["demo"], **extra}


def open_with(hub, token):
    """Connects with `token`; returns ("welcome", peer) or ("closed", code, reason)."""

    async def run():
        async with websockets.connect(f"{hub.ws}?token={token}") as ws:
            first = json.loads(await ws.recv())
            if first["type"] == "welcome":
                return ("welcome", first["peer"])
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as closed:
                return ("closed", closed.rcvd.code, closed.rcvd.reason)
            return ("unexpected", first)

    return asyncio.run(run())


@pytest.fixture(scope="module")
def keys():
    return {kind: Key(kind, f"{kind.lower()}-1") for kind in ("RS256", "ES256", "EdDSA")}


@pytest.fixture
def idp_hub(start_hub, keys, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [keys["RS256"].jwk, keys["ES256"].jwk]}))
    pem = tmp_path / "ed.pem"
    pem.write_text(keys["EdDSA"].pem)
    return start_hub("--jwks-file", str(jwks), "--jwt-key-file", f"{keys['EdDSA'].kid}={pem}",
                     "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER, "--jwt-leeway", "30")


@pytest.mark.parametrize("kind", ["RS256", "ES256", "EdDSA"])
def test_tokens_of_each_algorithm_open_a_session(idp_hub, keys, kind):
    assert open_with(idp_hub, keys[kind].sign(claims(sub=f"user-{kind.lower()}"))) == ("welcome", f"user-{kind.lower()}")


def test_every_refusal_closes_4001_with_its_reason(idp_hub, keys):
    rs, es = keys["RS256"], keys["ES256"]
    now = int(time.time())
    secret_like = rs.pem.encode()  # the classic confusion: HMAC keyed with the public key
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rs.kid}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.HMAC(secret_like, hashes.SHA256())
    mac.update(f"{header}.{body}".encode())
    hs_with_public_key = f"{header}.{body}.{b64(mac.finalize())}"
    unsigned = f"{b64(json.dumps({'alg': 'none', 'kid': rs.kid}).encode())}.{body}."
    other = Key("ES256", es.kid)  # same kid, another key
    cases = {
        "token algorithm HS256 not accepted": hs_with_public_key,
        "token algorithm none not accepted": unsigned,
        "unknown token key es256-9": es.sign(claims(), kid="es256-9"),
        "invalid token": other.sign(claims()),
        "token expired": rs.sign(claims(exp=now - 5)),
        "token not valid yet": rs.sign(claims(nbf=now + 86400)),
        "token audience not accepted": es.sign(claims(aud=["another-app"])),
        "token issuer not accepted": es.sign(claims(iss="https://evil.example/")),
    }
    for reason, token in cases.items():
        assert open_with(idp_hub, token) == ("closed", 4001, reason), reason
    # nbf a little ahead (the provider's clock runs fast): within the 30 s leeway
    assert open_with(idp_hub, rs.sign(claims(nbf=now + 10)))[0] == "welcome"
    # no kid: tried with every key of the token's algorithm
    assert open_with(idp_hub, keys["EdDSA"].sign(claims(sub="no-kid"), kid=False)) == ("welcome", "no-kid")


def test_a_private_key_or_a_bad_jwks_stops_start_up(start_hub, keys, tmp_path):
    private = tmp_path / "private.pem"
    private.write_bytes(keys["ES256"].private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    oct_jwks = tmp_path / "oct.json"
    oct_jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": b64(b"secret")}]}))
    for args in (["--jwt-key-file", str(private)], ["--jwks-file", str(oct_jwks)]):
        with pytest.raises(RuntimeError, match="private key|symmetric"):
            start_hub(*args)


class JWKSServer:
    """An identity provider's JWKS endpoint on loopback: serves `document`, counts the fetches."""

    def __init__(self, jwks):
        self.document = {"keys": jwks}
        self.fetches = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.fetches += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(keys):
    server = JWKSServer([keys["RS256"].jwk])
    yield server
    server.stop()


def test_a_jwks_url_is_cached_and_fetched_again_for_a_rotated_key(start_hub, keys, jwks_server):
    hub = start_hub("--jwks-url", jwks_server.url, "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER)
    assert jwks_server.fetches == 1  # at start-up
    for n in range(3):
        assert open_with(hub, keys["RS256"].sign(claims(sub=f"cached-{n}"))) == ("welcome", f"cached-{n}")
    assert jwks_server.fetches == 1, "a known kid is served from the cache"
    # The provider rotates in a new key: the first token naming it makes the hub fetch the JWKS again.
    rotated = Key("ES256", "es256-rotated")
    jwks_server.document = {"keys": [keys["RS256"].jwk, rotated.jwk]}
    assert open_with(hub, rotated.sign(claims(sub="rotated"))) == ("welcome", "rotated")
    assert jwks_server.fetches == 2
    # Made-up kids do not make the hub fetch again within 30 s of the last fetch.
    for n in range(5):
        token = rotated.sign(claims(), kid=f"made-up-{n}")
        assert open_with(hub, token) == ("closed", 4001, f"unknown token key made-up-{n}")
    assert jwks_server.fetches == 2
    # The key the hub had from the start still works after the fetch.
    assert open_with(hub, keys["RS256"].sign(claims(sub="after"))) == ("welcome", "after")


def test_a_jwks_url_that_cannot_be_used_stops_start_up(start_hub):
    port = free_port()  # nothing listens there
    with pytest.raises(RuntimeError, match="cannot fetch the JWKS"):
        start_hub("--jwks-url", f"http://127.0.0.1:{port}/jwks.json")
    with pytest.raises(RuntimeError, match="use https"):
        start_hub("--jwks-url", "http://id.example.test/jwks.json")
