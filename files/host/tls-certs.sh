#!/bin/sh
# Make the self-signed CA and/or the server certificate with openssl, on the host: the keys
# never leave it. Run by the deploy (mlflow_stack/tls.py) when its fact says so.
#   tls-certs.sh --make ca|server --ca-dir DIR --tls-dir DIR --uid UID --gid GID --ca-days N
#                --server-days N --san SAN [--san SAN]...   (SAN: DNS:name or IP:address)
# ca: a new CA (key root 0600 in CA_DIR), then a new server certificate; server: only the latter.
# TLS_DIR gets server.key (UID:GID 0600, for the proxy), server.crt and ca.crt (0644).
set -eu
sans= cn=
while [ $# -gt 0 ]; do
    case $1 in
        --make) what=$2 ;; --ca-dir) ca_dir=$2 ;; --tls-dir) tls_dir=$2 ;; --uid) uid=$2 ;; --gid) gid=$2 ;;
        --ca-days) ca_days=$2 ;; --server-days) server_days=$2 ;; --san) sans=${sans:+$sans,}$2; cn=${cn:-${2#*:}} ;;
        *) echo "tls-certs.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${what:?--make missing}" "${ca_dir:?--ca-dir missing}" "${tls_dir:?--tls-dir missing}" "${uid:?--uid missing}"
: "${gid:?--gid missing}" "${ca_days:?--ca-days missing}" "${server_days:?--server-days missing}"
: "${sans:?--san missing}"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

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
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -subj "/CN=$cn" \
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
