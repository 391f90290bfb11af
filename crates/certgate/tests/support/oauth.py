#!/usr/bin/env python3
"""Independent OAuth tooling for certgate's end-to-end tests (PyJWT, Authlib, cryptography).

Nothing here shares code with certgate: tokens are minted, verified and inspected by other
people's libraries, so a test that passes shows interoperability, not agreement with itself.

  oauth.py mint --key KEY --kid KID --iss ISS --aud AUD [--cert CERT] [--typ T]
                [--scope S] [--sub S] [--lifetime SECONDS] [--hs256-secret FILE]
                                                 prints a signed access token
  oauth.py verify --jwks-url URL --ca CA --token T --cert CERT --iss ISS --aud AUD
                                                 verifies with PyJWT, prints JSON
  oauth.py metadata --url URL --ca CA            validates RFC 8414 metadata with Authlib
"""

import argparse
import base64
import hashlib
import hmac
import json
import ssl
import sys
import time
import urllib.request
import uuid

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def first_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


def x5t(path):
    der = first_cert(path).public_bytes(serialization.Encoding.DER)
    return b64url(hashlib.sha256(der).digest())


def claims(args):
    now = int(time.time())
    out = {
        "iss": args.iss,
        "sub": args.sub,
        "aud": args.aud,
        "client_id": args.sub,
        "iat": now,
        "exp": now + args.lifetime,
        "jti": uuid.uuid4().hex,
        "scope": args.scope,
    }
    if args.cert:
        out["cnf"] = {"x5t#S256": x5t(args.cert)}
    return out


def cmd_mint(args):
    body = claims(args)
    if args.hs256_secret:
        # The public JWK's bytes as an HMAC secret: the classic algorithm-confusion attack.
        with open(args.hs256_secret, "rb") as f:
            secret = f.read()
        header = {"alg": "HS256", "typ": args.typ, "kid": args.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())
        )
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        print(signing_input + "." + b64url(sig))
        return
    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    print(jwt.encode(body, key, algorithm="ES256", headers={"kid": args.kid, "typ": args.typ}))


def rfc7638(public_key):
    """The RFC 7638 thumbprint of an EC public key: SHA-256 of its required members, sorted,
    without whitespace."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    text = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(text.encode()).digest())


def context(ca):
    return ssl.create_default_context(cafile=ca)


def cmd_verify(args):
    client = jwt.PyJWKClient(args.jwks_url, ssl_context=context(args.ca))
    key = client.get_signing_key_from_jwt(args.token)
    header = jwt.get_unverified_header(args.token)
    decoded = jwt.decode(
        args.token,
        key.key,
        algorithms=["ES256", "ES384", "EdDSA", "PS256", "RS256"],
        audience=args.aud,
        issuer=args.iss,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    print(
        json.dumps(
            {
                "header": header,
                "claims": decoded,
                "jwk_alg": key.algorithm_name,
                "kid_thumbprint": rfc7638(key.key),
                "x5t": x5t(args.cert),
            }
        )
    )


def cmd_metadata(args):
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    with urllib.request.urlopen(args.url, context=context(args.ca), timeout=20) as resp:
        raw = resp.read()
    doc = json.loads(raw)
    try:
        AuthorizationServerMetadata(doc).validate()
        error = None
    except Exception as e:  # noqa: BLE001 - the test prints what Authlib objected to
        error = f"{type(e).__name__}: {e}"
    print(json.dumps({"error": error, "doc": doc}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mint")
    for name in ("--key", "--kid", "--iss", "--aud"):
        s.add_argument(name, required=True)
    s.add_argument("--cert")
    s.add_argument("--typ", default="at+jwt")
    s.add_argument("--scope", default="accounts:read")
    s.add_argument("--sub", default="payments")
    s.add_argument("--lifetime", type=int, default=300)
    s.add_argument("--hs256-secret")
    s = sub.add_parser("verify")
    for name in ("--jwks-url", "--ca", "--token", "--cert", "--iss", "--aud"):
        s.add_argument(name, required=True)
    s = sub.add_parser("metadata")
    s.add_argument("--url", required=True)
    s.add_argument("--ca", required=True)
    args = p.parse_args()
    {
        "mint": cmd_mint,
        "verify": cmd_verify,
        "metadata": cmd_metadata,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
