#!/bin/bash
# The data host's firewall: only the tracking servers (and load balancers) may reach the ports
# Docker publishes for the bundled PostgreSQL and MinIO. Uploaded by the deploy
# (mlflow_stack/firewall.py) and run by mlflow-data-firewall.service; edit it in templates/.
#
#   data-firewall.sh apply PORTS SOURCES   put the rules in place (again), in one transaction
#   data-firewall.sh check PORTS SOURCES   exit 0 only if exactly these rules are in place
#   data-firewall.sh remove                take them out: the ports are open as before
#
# PORTS: the host ports Docker publishes, comma-separated ("5432,9000"); SOURCES: the IPv4
# addresses allowed to reach them, comma-separated, possibly empty.
#
# Why the rules look like this:
# - Published ports never pass INPUT: Docker DNATs them in PREROUTING and the packets are
#   forwarded to the container, through Docker's DOCKER-USER chain, which Docker leaves to the
#   admin (it keeps its rules when dockerd restarts). After the DNAT the destination port is the
#   container's, so the rules match the port the client asked for (--ctorigdstport), only on
#   connections Docker DNATed (--ctstate DNAT) and only in the client->server direction
#   (--ctdir ORIGINAL): replies, the host itself (127.0.0.1, its own addresses: OUTPUT, or
#   docker-proxy) and containers (no DNAT from a Docker bridge: they reach published ports
#   through docker-proxy, and each other directly) are never matched.
# - An allowed source RETURNs: Docker's own rules decide as before. Everyone else is DROPped.
# - IPv6: a port published on an IPv4-only network is also served on [::] by docker-proxy,
#   a host process (INPUT, no DNAT, DOCKER-USER never sees it). The allowed sources are IPv4,
#   so every IPv6 packet to these ports is dropped in INPUT, except on the loopback.
# - All rules live in one chain per family (MLFLOW-DATA), jumped to once from DOCKER-USER
#   (IPv4) and INPUT (IPv6): applying again replaces the chain's rules in one iptables-restore
#   transaction, never duplicates the jump, and never leaves the ports open in between.
set -euo pipefail

CHAIN=MLFLOW-DATA

usage() {
    echo "usage: $0 apply|check PORTS SOURCES | remove" >&2
    exit 2
}

# $1: "5432,9000" -> the array named by $2; each item must match $3.
split_list() {
    local item
    local -n into=$2
    into=()
    IFS=, read -r -a into <<< "$1"
    for item in "${into[@]}"; do
        [[ $item =~ $3 ]] || { echo "$0: not a valid value: '$item'" >&2; exit 2; }
    done
}

ipv6_usable() {
    command -v ip6tables >/dev/null && ip6tables -w -n -L INPUT >/dev/null 2>&1
}

# The chain's rules for one family, as `iptables -S` prints them.
ipv4_rules() {
    local port source
    for port in "${ports[@]}"; do
        for source in "${sources[@]}"; do
            echo "-A $CHAIN -s $source/32 -p tcp -m conntrack --ctstate DNAT --ctorigdstport $port --ctdir ORIGINAL -j RETURN"
        done
        echo "-A $CHAIN -p tcp -m conntrack --ctstate DNAT --ctorigdstport $port --ctdir ORIGINAL -j DROP"
    done
}

ipv6_rules() {
    local port
    echo "-A $CHAIN -i lo -j RETURN"
    for port in "${ports[@]}"; do
        echo "-A $CHAIN -p tcp -m tcp --dport $port -m conntrack --ctdir ORIGINAL -j DROP"
    done
}

# $1: iptables or ip6tables; $2: the chain that jumps to ours; stdin: the rules.
# One iptables-restore transaction: create or empty our chain, fill it, and make the jump the
# parent chain's first rule, exactly once.
restore() {
    local tool=$1 parent=$2 jumps
    {
        echo "*filter"
        # Before dockerd's first start (at boot this unit runs first) DOCKER-USER does not exist
        # yet; Docker uses the chain it finds.
        "$tool" -w -n -L "$parent" >/dev/null 2>&1 || echo ":$parent - [0:0]"
        echo ":$CHAIN - [0:0]"
        echo "-F $CHAIN"
        cat
        jumps=$("$tool" -w -S "$parent" 2>/dev/null | grep -cxF -- "-A $parent -j $CHAIN" || true)
        for ((; jumps > 0; jumps--)); do
            echo "-D $parent -j $CHAIN"
        done
        echo "-I $parent 1 -j $CHAIN"
        echo "COMMIT"
    } | "$tool-restore" -w --noflush
}

# $1: tool; $2: parent chain; stdin: the rules. Our jump is the parent's first rule, and the
# chain holds exactly these rules (-C compares them as the kernel has them).
in_place() {
    local tool=$1 parent=$2 rule count=0
    [ "$("$tool" -w -S "$parent" 2>/dev/null | sed -n 2p)" = "-A $parent -j $CHAIN" ] || return 1
    [ "$("$tool" -w -S "$parent" | grep -cxF -- "-A $parent -j $CHAIN")" = 1 ] || return 1
    while read -r rule; do
        # shellcheck disable=SC2086  # the rule's words
        "$tool" -w -C ${rule#-A } 2>/dev/null || return 1
        count=$((count + 1))
    done
    [ "$("$tool" -w -S "$CHAIN" | grep -c '^-A ')" = "$count" ]
}

remove() {
    local tool=$1 parent=$2
    "$tool" -w -n -L "$CHAIN" >/dev/null 2>&1 || return 0
    while "$tool" -w -D "$parent" -j "$CHAIN" 2>/dev/null; do :; done
    "$tool" -w -F "$CHAIN"
    "$tool" -w -X "$CHAIN"
}

action=${1:-}
case $action in
    apply|check)
        [ $# = 3 ] || usage
        split_list "$2" ports '^[0-9]{1,5}$'
        split_list "$3" sources '^[0-9]{1,3}(\.[0-9]{1,3}){3}$'
        if [ "$action" = apply ]; then
            ipv4_rules | restore iptables DOCKER-USER
            echo "$CHAIN: ports ${2:-none} reachable from ${3:-no other host} only"
            if ipv6_usable; then
                ipv6_rules | restore ip6tables INPUT
                echo "$CHAIN: ports ${2:-none} closed to IPv6 clients"
            fi
        else
            ipv4_rules | in_place iptables DOCKER-USER
            if ipv6_usable; then ipv6_rules | in_place ip6tables INPUT; fi
        fi
        ;;
    remove)
        [ $# = 1 ] || usage
        remove iptables DOCKER-USER
        if ipv6_usable; then remove ip6tables INPUT; fi
        echo "$CHAIN: removed; the published ports are open as before"
        ;;
    *)
        usage
        ;;
esac
