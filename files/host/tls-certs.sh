#!/bin/sh
# Make the self-signed CA and/or the server certificate with openssl, on the host: the keys
# never leave it. Run by the deploy (mlflow_stack/tls.py) when its fact says so.
#   tls-certs.sh ca|server CA_DIR TLS_DIR UID GID CA_DAYS SERVER_DAYS SAN...   (SAN: DNS:name or IP:address)
# ca: a new CA (key root 0600 in CA_DIR), then a new server certificate; server: only the latter.
# TLS_DIR gets server.key (UID:GID 0600, for the proxy), server.crt and ca.crt (0644).
set -eu
what=$1 ca_dir=$2 tls_dir=$3 uid=$4 gid=$5 ca_days=$6 server_days=$7
shift 7
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sans=$(printf '%s,' "$@"); sans=${sans%,}

if [ "$what" = ca ]; then
    cat > "$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = MLflow stack CA $(hostname)
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF
    openssl req -x509 -new -config "$work/ca.cnf" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
        -keyout "$work/ca.key" -out "$work/ca.crt" -days "$ca_days" 2>/dev/null
    mv "$work/ca.key" "$ca_dir/ca.key"
    chmod 644 "$work/ca.crt"
    mv "$work/ca.crt" "$ca_dir/ca.crt"
fi

cat > "$work/server.ext" <<CNF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -subj "/CN=${1#*:}" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$server_days" -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null
chown "$uid:$gid" "$work/server.key"
chmod 644 "$work/server.crt"
cp "$ca_dir/ca.crt" "$work/ca.crt"
chmod 644 "$work/ca.crt"
mv "$work/server.key" "$tls_dir/server.key"
mv "$work/server.crt" "$tls_dir/server.crt"
mv "$work/ca.crt" "$tls_dir/ca.crt"
echo "made a $what certificate for $sans"
