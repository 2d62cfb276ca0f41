#!/bin/sh
# Wait until every long-running service of a compose project is healthy and the one-shot
# service exited 0. On timeout (or a failed one-shot) print the last log lines of each
# failing service and exit 1, so the deploy fails with the reason in view.
# Usage: wait-healthy.sh PROJECT TIMEOUT_SECONDS ONESHOT_SERVICE SERVICE...
set -u
project=$1 timeout=$2 oneshot=$3
shift 3
deadline=$(( $(date +%s) + timeout ))

compose_ps() {
    docker compose --project-name "$project" ps --all \
        --format '{{.Service}} {{.State}} {{.Health}} {{.ExitCode}}'
}
# Prints the services that are not where they should be, one per line.
failing() {
    status=$(compose_ps)
    if ! printf '%s\n' "$status" | awk -v s="$oneshot" '$1 == s && $2 == "exited" && $NF == "0" {ok=1} END {exit !ok}'; then
        echo "$oneshot"
    fi
    for service in "$@"; do
        if ! printf '%s\n' "$status" | awk -v s="$service" '$1 == s && $2 == "running" && $3 == "healthy" {ok=1} END {exit !ok}'; then
            echo "$service"
        fi
    done
}
oneshot_failed() {
    compose_ps | awk -v s="$oneshot" '$1 == s && $2 == "exited" && $NF != "0" {bad=1} END {exit !bad}'
}

while :; do
    bad=$(failing "$@")
    if [ -z "$bad" ]; then
        echo "all services healthy"
        exit 0
    fi
    if oneshot_failed || [ "$(date +%s)" -ge "$deadline" ]; then
        break
    fi
    sleep 2
done
echo "not healthy after waiting: $(echo $bad)" >&2
docker compose --project-name "$project" ps --all >&2
for service in $bad; do
    echo "----- last log lines of $service -----" >&2
    docker compose --project-name "$project" logs --no-color --tail 40 "$service" >&2
done
exit 1
