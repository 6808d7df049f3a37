#!/usr/bin/env bash
# test_pki.sh DIR — a throw-away PKI for the TLS tests, made with openssl in
# DIR (which must exist): ca.pem (+ ca.key) signs server.pem (for IP
# 127.0.0.1) and client.pem (client auth), with their keys server.key and
# client.key; other.pem is a second CA that signed neither. P-256 keys,
# valid 2 days. Quiet; exits non-zero when a step fails.
set -euo pipefail
cd "$1"
for k in ca other server client; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $k.key 2>/dev/null
done
{
  openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=opstate-test-ca
  openssl req -x509 -new -key other.key -out other.pem -days 2 -subj /CN=opstate-other-ca
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -new -key server.key -out server.csr -subj /CN=127.0.0.1
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
  openssl req -new -key client.key -out client.csr -subj /CN=opstate-client
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext
} >/dev/null 2>&1
