#!/bin/sh
# Give the database role the password in .env (a new, changed or regenerated one) before
# MLflow is restarted with it. Runs through the database container's local socket, which
# the image trusts; the password goes from .env to psql on a pipe: never in a process's
# argv, never printed. Stops with a reason, changing nothing else, when the cluster in
# data/postgres does not hold the configured role and database.
# Usage: apply-db-password.sh --stack-dir DIR --project NAME --db-role ROLE --database NAME --timeout SECONDS
set -eu
while [ $# -gt 0 ]; do
    case $1 in
        --stack-dir) dir=$2 ;; --project) project=$2 ;; --db-role) role=$2 ;; --database) database=$2 ;;
        --timeout) timeout=$2 ;;
        *) echo "apply-db-password.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
: "${dir:?--stack-dir missing}" "${project:?--project missing}" "${role:?--db-role missing}"
: "${database:?--database missing}" "${timeout:?--timeout missing}"
if [ ! -s "$dir/data/postgres/PG_VERSION" ]; then
    echo "no database cluster yet: it will be created with the password in .env"
    exit 0
fi
cd "$dir"
# The database alone: started, or recreated if its settings changed; MLflow keeps running.
docker compose --project-name "$project" up -d --no-deps postgres
sh "$dir/wait-healthy.sh" --project "$project" --timeout "$timeout" --service postgres
sed -n 's/^POSTGRES_PASSWORD=//p' .env | docker compose --project-name "$project" exec -T postgres sh -c '
    IFS= read -r password
    # SET first: a failing statement must not reach the server log with the password in it.
    printf "SET log_min_error_statement TO panic;\nALTER ROLE \"%s\" WITH PASSWORD '\''%s'\'';\n" "$1" "$password" |
        psql -X -w -q -v ON_ERROR_STOP=1 -U "$1" -d "$2"' sh "$role" "$database" || {
    echo "cannot set the password of role '$role' in database '$database': the cluster in" \
         "$dir/data/postgres does not hold them (made with other postgres_user / postgres_db" \
         "settings, or copied from another server?). Stopped before restarting MLflow." >&2
    exit 1
}
echo "database role '$role' now has the password in .env"
