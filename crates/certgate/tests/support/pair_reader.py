"""Reads a certificate file and its key file in a loop, as a server reloading them would,
until STOP exists (STOP.ready is made after the first read); then prints one JSON object:
how many reads, the failures (a file that does not parse, a certificate in the file that
does not parse, a key that is not the certificate's), and the serials seen.

Usage: pair_reader.py CERT KEY STOP [DATA]

With DATA (the `.NAME.data` link of the versioned layout), once it exists the pair is read
as a reader of that layout should: DATA opened once, both files opened relative to it.
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


def read_through(data, cert_path, key_path):
    """Both files from the version DATA links to when it is opened."""
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = []
        for path in (cert_path, key_path):
            f = os.open(os.path.basename(path), os.O_RDONLY, dir_fd=fd)
            with os.fdopen(f, "rb") as handle:
                out.append(handle.read())
        return out
    finally:
        os.close(fd)


def main():
    cert_path, key_path, stop = sys.argv[1:4]
    data = sys.argv[4] if len(sys.argv) > 4 else None
    reads, failures, serials = 0, [], []
    while not os.path.exists(stop):
        reads += 1
        try:
            if data and os.path.lexists(data):
                cert_bytes, key_bytes = read_through(data, cert_path, key_path)
            else:
                with open(cert_path, "rb") as f:
                    cert_bytes = f.read()
                with open(key_path, "rb") as f:
                    key_bytes = f.read()
            chain = x509.load_pem_x509_certificates(cert_bytes)
            key = serialization.load_pem_private_key(key_bytes, password=None)
            for cert in chain:
                cert.public_key()
                cert.extensions
            if spki(chain[0].public_key()) != spki(key.public_key()):
                raise ValueError("the key is not the certificate's")
            serial = format(chain[0].serial_number, "x")
            if not serials or serials[-1] != serial:
                serials.append(serial)
            if reads == 1:
                open(stop + ".ready", "w").close()
        except Exception as e:  # every failure is what the test looks for
            failures.append(f"read {reads}: {type(e).__name__}: {e}")
        time.sleep(0.002)
    print(json.dumps({"reads": reads, "failures": failures[:20], "serials": serials}))


main()
