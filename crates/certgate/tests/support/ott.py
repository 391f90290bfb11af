"""Makes a one-time token (JWS, ES256) the way any JOSE library would, with Python's
cryptography: independent of certgate's own signing code.

    ott.py KEY.pem|new CLAIMS_JSON   prints the token
"""
import base64
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    key_arg, claims = sys.argv[1], json.loads(sys.argv[2])
    if key_arg == "new":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        with open(key_arg, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    header = {"alg": "ES256", "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    print(f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")


main()
