#!/usr/bin/env bash
# make-pki.sh DIR [FQDN]: generate a throwaway test/demo PKI with the openssl CLI (OpenSSL 3).
#
# Writes into DIR (created if missing):
#   ca.pem / ca.key                 RSA-2048 root CA, 10 years
#   server.pem / server.key         RSA-2048, CN=SAN=FQDN (default sbc.tlsgate.test),
#                                   EKU serverAuth+clientAuth, signed by ca, 825 days
#   client.pem / client.key         RSA-2048, CN=SAN=sip.um.example.net (the provider identity),
#                                   EKU clientAuth+serverAuth, signed by ca
#   client-ec.pem / client-ec.key   EC P-256, same name and EKU as client, signed by ca
#   selfsigned.pem / selfsigned.key self-signed, CN=SAN=sip.um.example.net
#   wrongcase.pem / wrongcase.key   CN=SAN=Sip.um.example.net, signed by ca
#   provider.pem / provider.key     upstream provider server cert, CN=SAN=sip.provider.test,
#                                   EKU serverAuth+clientAuth, signed by ca
#   wrongname.pem / wrongname.key   CN=SAN=evil.provider.test, EKU serverAuth+clientAuth, by ca
#   localhost.pem / localhost.key   CN=SAN=localhost, EKU serverAuth+clientAuth, by ca (a target
#                                   reached as `connect = localhost:PORT` proves that name)
# Certificates made for another purpose (EC P-256, signed by ca, refused by the peer policy):
#   codesign.pem / codesign.key     CN=SAN=sip.um.example.net, EKU codeSigning only
#   serveronly.pem / serveronly.key CN=SAN=sip.um.example.net, EKU serverAuth only (no clientAuth)
#   leafca.pem / leafca.key         CN=SAN=sip.um.example.net, EKU clientAuth+serverAuth, but
#                                   basicConstraints CA:TRUE (a CA profile on an end entity)
#   provider-clientonly.pem / .key  CN=SAN=sip.provider.test, EKU clientAuth only (no serverAuth)
# Keys are mode 0600. Idempotent: if DIR/ca.pem exists nothing is done. Not for production.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [FQDN]" >&2
    exit 2
fi
dir=$1
fqdn=${2:-sbc.tlsgate.test}
provider_id=sip.um.example.net
days=825

if [[ -e "$dir/ca.pem" ]]; then
    echo "make-pki: $dir/ca.pem exists, leaving the PKI in $dir as it is" >&2
    exit 0
fi
mkdir -p "$dir"
umask 077

work=$(mktemp -d "${TMPDIR:-/tmp}/make-pki.XXXXXX")
trap 'rm -rf "$work"' EXIT

# run: execute quietly; on failure show what openssl said.
run() {
    if ! "$@" >"$work/log" 2>&1; then
        echo "make-pki: failed: $*" >&2
        cat "$work/log" >&2
        exit 1
    fi
}

# newkey NAME rsa|ec: write DIR/NAME.key.
newkey() {
    local name=$1 kind=$2
    if [[ $kind == ec ]]; then
        run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$dir/$name.key"
    else
        run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key"
    fi
    chmod 0600 "$dir/$name.key"
}

# leaf NAME CN KIND EKU: a CA-signed leaf certificate with CN=SAN=CN.
leaf() {
    local name=$1 cn=$2 kind=$3 eku=$4
    local ku="digitalSignature, keyEncipherment"
    [[ $kind == ec ]] && ku="digitalSignature"
    newkey "$name" "$kind"
    run openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$work/$name.csr"
    cat >"$work/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, $ku
extendedKeyUsage = $eku
subjectAltName = DNS:$cn
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    run openssl x509 -req -in "$work/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -days "$days" -sha256 \
        -extfile "$work/$name.ext" -out "$dir/$name.pem"
    chmod 0644 "$dir/$name.pem"
}

# Root CA.
newkey ca rsa
run openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=tlsgate test root CA" -days 3650 \
    -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem"
chmod 0644 "$dir/ca.pem"

leaf server "$fqdn" rsa "serverAuth, clientAuth"
leaf client "$provider_id" rsa "clientAuth, serverAuth"
leaf client-ec "$provider_id" ec "clientAuth, serverAuth"
leaf wrongcase "Sip.um.example.net" rsa "clientAuth, serverAuth"
leaf provider "sip.provider.test" rsa "serverAuth, clientAuth"
leaf wrongname "evil.provider.test" rsa "serverAuth, clientAuth"
leaf localhost "localhost" rsa "serverAuth, clientAuth"

# Self-signed certificate carrying the provider identity (not issued by the CA).
newkey selfsigned rsa
run openssl req -x509 -new -key "$dir/selfsigned.key" -subj "/CN=$provider_id" -days "$days" \
    -sha256 -addext "subjectAltName=DNS:$provider_id" \
    -addext "extendedKeyUsage=clientAuth,serverAuth" -out "$dir/selfsigned.pem"
chmod 0644 "$dir/selfsigned.pem"

# issue_ext NAME CN KIND: a CA-signed certificate with CN=SAN=CN whose other extensions are read
# from stdin (for the certificates made for another purpose).
issue_ext() {
    local name=$1 cn=$2 kind=$3
    newkey "$name" "$kind"
    run openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$work/$name.csr"
    {
        cat
        echo "subjectAltName = DNS:$cn"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
    } >"$work/$name.ext"
    run openssl x509 -req -in "$work/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -days "$days" -sha256 \
        -extfile "$work/$name.ext" -out "$dir/$name.pem"
    chmod 0644 "$dir/$name.pem"
}

issue_ext codesign "$provider_id" ec <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
EOF
issue_ext serveronly "$provider_id" ec <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EOF
issue_ext leafca "$provider_id" ec <<EOF
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = clientAuth, serverAuth
EOF
issue_ext provider-clientonly "sip.provider.test" ec <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF
