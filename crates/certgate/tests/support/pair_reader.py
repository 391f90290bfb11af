"""Reads a certificate file and its key file in a loop, as a server reloading them would,
until STOP exists; then prints one JSON object: how many reads, the failures (a file that
does not parse, a certificate in the file that does not parse, a key that is not the
certificate's), and the serials seen.

Usage: pair_reader.py CERT KEY STOP
"""

import json
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def main():
    cert_path, key_path, stop = sys.argv[1:4]
    reads, failures, serials = 0, [], []
    while not os.path.exists(stop):
        reads += 1
        try:
            with open(cert_path, "rb") as f:
                chain = x509.load_pem_x509_certificates(f.read())
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
            for cert in chain:
                cert.public_key()
                cert.extensions
            if spki(chain[0].public_key()) != spki(key.public_key()):
                raise ValueError("the key is not the certificate's")
            serial = format(chain[0].serial_number, "x")
            if not serials or serials[-1] != serial:
                serials.append(serial)
        except Exception as e:  # every failure is what the test looks for
            failures.append(f"read {reads}: {type(e).__name__}: {e}")
        time.sleep(0.002)
    print(json.dumps({"reads": reads, "failures": failures[:20], "serials": serials}))


main()
