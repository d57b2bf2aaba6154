#!/bin/bash
# The image's HEALTHCHECK: checks the role PID 1 runs. The gateway answers
# GET /health; the coordinator's and agents' gRPC ports need a mesh client
# certificate, so for them a TCP connect to the listener is the check.
set -u
# HEALTHCHECK_PID: another process to check (for testing the script).
mapfile -d "" -t argv < "/proc/${HEALTHCHECK_PID:-1}/cmdline"
role=${argv[1]:-}

# The value of flag $1 on PID 1's command line, else env var $2, else $3.
setting() {
    local i
    for ((i = 2; i < ${#argv[@]}; i++)); do
        case ${argv[i]} in
            "$1") echo "${argv[i + 1]:-}"; return ;;
            "$1"=*) echo "${argv[i]#*=}"; return ;;
        esac
    done
    echo "${!2:-$3}"
}

# HOST:PORT to connect to for a listen address (wildcards mean loopback).
target() {
    local addr=$1 host port
    port=${addr##*:}
    host=${addr%:*}
    case $host in 0.0.0.0 | "[::]" | "") host=127.0.0.1 ;; esac
    echo "$host:$port"
}

tcp() {
    local hp=$1
    timeout 3 bash -c "exec 3<>/dev/tcp/${hp%:*}/${hp##*:}" 2>/dev/null
}

case $role in
    gateway)
        hp=$(target "$(setting --http ANNEXMESH_HTTP 127.0.0.1:9417)")
        scheme=http
        [ -n "$(setting --http-tls-cert ANNEXMESH_HTTP_TLS_CERT '')" ] && scheme=https
        # -k: the certificate names the public host, not loopback.
        exec curl -fsSk --max-time 3 -o /dev/null "$scheme://$hp/health" ;;
    coordinator)
        tcp "$(target "$(setting --listen ANNEXMESH_COORDINATOR_LISTEN 127.0.0.1:7400)")" ;;
    agent)
        tcp "$(target "$(setting --listen ANNEXMESH_AGENT_LISTEN 127.0.0.1:7500)")" ;;
    *)
        # admin, up and the rest: nothing long-running to check.
        exit 0 ;;
esac
