# scripts/bench/msgd_ini.sh: the msgd configuration every benchmark uses
# (sourced by scripts/bench.sh and scripts/bench/profile.sh).
#
#   bench_msgd_ini REACTORS [MAX_CONNECTIONS] > msgd.ini
#
# Every listener on an ephemeral loopback port (read back from STATUS),
# heartbeats and idle timeouts off, warnings only.
bench_msgd_ini() {
    cat <<EOF2
[server]
reactors = $1
max_connections = ${2:-10000}
backlog = 4096
[msg]
listen = 127.0.0.1:0
[echo]
listen = 127.0.0.1:0
[admin]
listen = 127.0.0.1:0
[timeouts]
heartbeat_interval = 0
idle_timeout = 0
drain_timeout = 1s
[log]
level = warn
EOF2
}
