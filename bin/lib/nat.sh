# Shared by bin/e2e-nat and bin/e2e-fleet (sourced): namespace helpers, the
# test's "internet" (the namespace named by $INET, with bridge br0 and
# 198.51.100.1/24) and a NAT router between a client namespace and it.
# Every address exists only inside namespaces the calling script created.

nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }

# Kills what the script started ($PIDS) and whatever still runs in its
# namespaces ($NS), and deletes them: the EXIT trap's work, and the first
# step of a run (an interrupted one may have left them).
teardown() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in "${NS[@]}"; do ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}

# Creates the namespaces $NS (loopback up) and, in $INET, the test
# internet's bridge br0 at 198.51.100.1/24. The bridge gets a fixed MAC: a
# bridge otherwise takes the lowest of its ports' (random) MACs, so adding
# a port could change it under the ARP caches of the namespaces already
# talking to 198.51.100.1 (CI saw e2e-nat's home router lose its pings).
internet() {
    for n in "${NS[@]}"; do ip netns add "$n"; nsx "$n" ip link set lo up; done
    nsx "$INET" ip link add br0 type bridge
    nsx "$INET" ip link set br0 address 02:00:00:00:00:01
    nsx "$INET" ip addr add 198.51.100.1/24 dev br0
    nsx "$INET" ip link set br0 up
}

# Waits (up to 5 s) until $2:$3 takes TCP connections from namespace $1.
wait_tcp() {
    for _ in $(seq 50); do
        nsx "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.1
    done
}

# Pings from namespace $1 until $2 answers, for up to 10 s: a veth just set
# up drops packets until the kernel has activated its link (later still
# while it is busy tearing down other namespaces), so one ping is not enough.
reach() {
    nsx "$1" ping -c1 -i0.2 -w10 "$2" >/dev/null ||
        { echo "${0##*/}: $2 does not answer pings from namespace $1 within 10 s" >&2; return 1; }
}

router() { # name wan-address lan-address lan-net client client-address masquerade-flags
    local r=$1 wan=$2 lan=$3 net=$4 c=$5 caddr=$6 flags=$7
    ip link add "$r-wan" netns "$r" type veth peer name "$r-up" netns "$INET"
    nsx "$INET" ip link set "$r-up" master br0 up
    nsx "$r" ip addr add "$wan/24" dev "$r-wan"
    nsx "$r" ip link set "$r-wan" up
    nsx "$r" ip route add default via 198.51.100.1
    ip link add "$r-lan" netns "$r" type veth peer name eth0 netns "$c"
    nsx "$r" ip addr add "$lan/24" dev "$r-lan"
    nsx "$r" ip link set "$r-lan" up
    nsx "$c" ip addr add "$caddr/24" dev eth0
    nsx "$c" ip link set eth0 up
    nsx "$c" ip route add default via "$lan"
    nsx "$r" sysctl -qw net.ipv4.ip_forward=1
    # shellcheck disable=SC2086
    nsx "$r" iptables -t nat -A POSTROUTING -s "$net" -o "$r-wan" -j MASQUERADE $flags
    # Unsolicited packets to the router itself are dropped, not answered
    # with ICMP (which would break hole punching), as home routers do.
    nsx "$r" iptables -A INPUT -i "$r-wan" -m conntrack --ctstate NEW -j DROP
}
