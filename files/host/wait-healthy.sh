#!/bin/sh
# Wait until the given long-running services of a compose project are healthy (and the
# one-shot services, if given, exited 0). Fails fast, with the failing service's last log
# lines and a one-line reason, when a service crash-loops (restarted twice while waiting),
# has exited, or the one-shot failed; otherwise fails after TIMEOUT_SECONDS (slow but
# progressing starts). An unhealthy service that runs is waited for too: Docker keeps checking,
# and on a slow or loaded host a check that timed out 20 times in a row passes again later.
# Looks every INTERVAL seconds (default 2; the deploy passes mlflow_health_start_interval: a
# look starts docker's CLI, which costs a very slow host as much as a health probe).
# Usage: wait-healthy.sh --project NAME --timeout SECONDS [--interval SECONDS] [--oneshot SERVICE]... [--service SERVICE]...
set -u
project= timeout= oneshots= services= interval=2
while [ $# -ge 2 ]; do
    case $1 in
        --project) project=$2 ;;
        --timeout) timeout=$2 ;;
        --interval) interval=$2 ;;
        --oneshot) oneshots="$oneshots $2" ;;
        --service) services="$services $2" ;;
        *) break ;;
    esac
    shift 2
done
case $interval in ''|*[!0-9]*|0) interval= ;; esac
if [ $# -ne 0 ] || [ -z "$project" ] || [ -z "$timeout" ] || [ -z "$interval" ]; then
    echo "usage: wait-healthy.sh --project NAME --timeout SECONDS [--interval SECONDS] [--oneshot SERVICE]... [--service SERVICE]..." >&2
    exit 2
fi
set -- $services
deadline=$(( $(date +%s) + timeout ))

# One line per container: service state health exit-code restart-count. `ps --all` also
# lists `docker compose run` one-offs (a scheduled backup's archive container runs as
# create-bucket): they carry the label oneoff=True and are not the service, so left out.
status() {
    ids=$(docker compose --project-name "$project" ps --all --quiet 2>/dev/null)
    [ -n "$ids" ] || return 0
    docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}} {{.RestartCount}} {{index .Config.Labels "com.docker.compose.oneoff"}}' $ids |
        awk '$6 != "True" {print $1, $2, $3, $4, $5}'
}
field() {  # field SERVICE N: column N of SERVICE's line
    printf '%s\n' "$current" | awk -v s="$1" -v n="$2" '$1 == s {print $n; exit}'
}
restarts_at_start=$(status)

while :; do
    current=$(status)
    waiting="" reason="" unhealthy=""
    for oneshot in $oneshots; do
        state=$(field "$oneshot" 2) code=$(field "$oneshot" 4)
        if [ "$state" = exited ] && [ "$code" != 0 ]; then
            reason="${reason:-$oneshot failed (exit code $code)}" waiting="$waiting $oneshot"
        elif [ "$state" != exited ]; then
            waiting="$waiting $oneshot"
        fi
    done
    oneshots_pending=$waiting
    for service in "$@"; do
        state=$(field "$service" 2) health=$(field "$service" 3) code=$(field "$service" 4)
        before=$(printf '%s\n' "$restarts_at_start" | awk -v s="$service" '$1 == s {print $5; exit}')
        now=$(field "$service" 5)
        restarts=$(( ${now:-0} - ${before:-0} ))
        if [ "$state" = running ] && [ "$health" = healthy ]; then
            continue
        fi
        waiting="$waiting $service"
        if [ -z "$reason" ] && [ "$restarts" -ge 2 ]; then
            reason="$service keeps crashing: restarted $restarts times while waiting, last exit code $code"
        elif [ -z "$reason" ] && { [ "$state" = exited ] || [ "$state" = dead ]; }; then
            reason="$service stopped ($state, exit code $code)"
        elif [ -z "$reason" ] && [ "$state" = created ] && [ -z "$oneshots_pending" ]; then
            # compose up has returned: a container left in "created" could not be started.
            reason="$service could not be started (created, never ran: is its port taken?)"
        elif [ "$health" = unhealthy ] && [ "$state" = running ]; then
            # (A restarting container keeps its last health status: the restart count tells.)
            unhealthy="$unhealthy $service"
        fi
    done
    if [ -z "$waiting" ]; then
        echo "healthy:" "$@" ${oneshots:+"(done:$oneshots)"}
        exit 0
    fi
    if [ -z "$reason" ] && [ "$(date +%s)" -ge "$deadline" ]; then
        reason="not healthy after ${timeout}s (mlflow_health_timeout):$waiting${unhealthy:+ (unhealthy, its health check keeps failing:$unhealthy)}"
    fi
    [ -n "$reason" ] && break
    sleep "$interval"
done
docker compose --project-name "$project" ps --all >&2
for service in $waiting; do
    echo "----- last log lines of $service -----" >&2
    docker compose --project-name "$project" logs --no-color --tail 40 "$service" >&2
done
echo "FAILED: $reason. More: docker compose --project-name $project logs <service>" >&2
exit 1
