#!/bin/sh
# Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/ (not checked in):
#   - what certgate's own code makes (TestPki certificates, CSRs, CRLs, configurations, paths):
#     crates/gateway/examples/fuzz_seeds.rs;
#   - openssl-made CSRs, certificates and CRLs with key types and options certgate does not
#     produce itself;
#   - real ClientHellos from openssl s_client and curl: capture_client_hello.py.
# Then fold them into the checked-in corpus and minimise it (see README.md):
#   cp seeds/<target>/* corpus/<target>/ && cargo +nightly fuzz cmin -s none <target>
set -eu
cd "$(dirname "$0")"
FUZZ=$(pwd)
OUT="$FUZZ/seeds"
rm -rf "$OUT"
mkdir -p "$OUT"

(cd .. && nice -n 19 cargo run -q -p certgate-gateway --features fuzz --example fuzz_seeds -- "$OUT")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# CSRs: RSA, P-384, Ed25519, SHA-1, many SANs, a subject with hostile characters.
csr() { # name, key options, extra req options...
    name=$1; shift
    keyopts=$1; shift
    # shellcheck disable=SC2086
    openssl genpkey $keyopts -out "$name.key" 2>/dev/null
    openssl req -new -key "$name.key" -out "$OUT/csr/openssl-$name.pem" "$@"
    openssl req -in "$OUT/csr/openssl-$name.pem" -outform DER -out "$OUT/csr/openssl-$name.der"
}
csr rsa "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" -subj "/CN=rsa.example.test" \
    -addext "subjectAltName=DNS:rsa.example.test,IP:192.0.2.1"
csr p384 "-algorithm EC -pkeyopt ec_paramgen_curve:P-384" -subj "/C=US/ST=CA/L=SF/O=Ex/OU=Dev/CN=p384" \
    -addext "subjectAltName=URI:spiffe://example.test/p384,email:p384@example.test"
csr ed25519 "-algorithm ED25519" -subj "/CN=ed" -addext "subjectAltName=DNS:ed.example.test"
csr sha1 "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" -sha1 -subj "/CN=sha1"
csr hostile "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" \
    -subj "/CN=a\"b\\\\c,d;e=f/O=x\\+y/emailAddress=e@example.test" \
    -addext "subjectAltName=DNS:*.example.test,URI:urn:uuid:1234,email:a.b@example.test" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=keyCertSign"
csr othername "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" -subj "/CN=other" \
    -addext "subjectAltName=otherName:1.2.3.4;UTF8:x,DNS:ok.example.test"
csr p521 "-algorithm EC -pkeyopt ec_paramgen_curve:P-521" -subj "/CN=p521"

# Certificates: self-signed RSA and Ed25519, a CA and a leaf with many extensions.
mkdir -p "$OUT/cert_load" "$OUT/crl_load"
openssl req -x509 -key rsa.key -subj "/CN=rsa root" -days 30 -out "$OUT/cert_load/openssl-rsa.pem" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:1" -addext "nameConstraints=permitted;DNS:.example.test"
openssl req -x509 -key ed25519.key -subj "/CN=ed root" -days 30 -outform DER \
    -out "$OUT/cert_load/openssl-ed25519.der"
openssl req -new -key p384.key -subj "/CN=leaf/O=Ex" -out leaf.csr
openssl x509 -req -in leaf.csr -CA "$OUT/cert_load/openssl-rsa.pem" -CAkey rsa.key -days 1 \
    -set_serial 0x00ff01 -out leaf.pem -extfile /dev/stdin 2>/dev/null <<EXT
subjectAltName=DNS:leaf.example.test,IP:::1,URI:spiffe://example.test/leaf,email:l@example.test
extendedKeyUsage=clientAuth,serverAuth
keyUsage=critical,digitalSignature
crlDistributionPoints=URI:http://example.test/crl
authorityInfoAccess=OCSP;URI:http://ocsp.example.test
certificatePolicies=1.2.3.4
EXT
cat leaf.pem "$OUT/cert_load/openssl-rsa.pem" > "$OUT/cert_load/openssl-chain.pem"

# A CRL made by `openssl ca`, with one revoked entry and reasons.
cat > ca.cnf <<CNF
[ca]
default_ca = d
[d]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 30
crl_extensions = ext
[ext]
authorityKeyIdentifier = keyid:always
CNF
: > index.txt
echo 01 > crlnumber
openssl ca -config ca.cnf -keyfile rsa.key -cert "$OUT/cert_load/openssl-rsa.pem" \
    -revoke leaf.pem -crl_reason keyCompromise 2>/dev/null
openssl ca -config ca.cnf -keyfile rsa.key -cert "$OUT/cert_load/openssl-rsa.pem" \
    -gencrl -out "$OUT/crl_load/openssl-revoked.pem" 2>/dev/null
openssl crl -in "$OUT/crl_load/openssl-revoked.pem" -outform DER -out "$OUT/crl_load/openssl-revoked.der"

# Real ClientHellos.
python3 "$FUZZ/capture_client_hello.py" "$OUT/client_hello"

for t in "$OUT"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
