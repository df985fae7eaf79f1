#!/bin/sh
# One-shot (temporalio/admin-tools): create the Temporal databases in PostgreSQL and bring their
# schemas up to the version this admin-tools image ships. Safe to run again: `create` ignores a
# database that exists, `setup-schema -v 0.0` and `update-schema` only apply what is missing.
set -eu

: "${DB:=postgres12}"
: "${DB_PORT:=5432}"
: "${POSTGRES_SEEDS:=postgresql}"
: "${POSTGRES_USER:=temporal}"
: "${POSTGRES_PWD:?POSTGRES_PWD must be set}"
: "${DBNAME:=temporal}"
: "${VISIBILITY_DBNAME:=temporal_visibility}"
: "${SCHEMA_ROOT:=/etc/temporal/schema/postgresql/v12}"
export SQL_PASSWORD="$POSTGRES_PWD"

tries=0
until nc -z "$POSTGRES_SEEDS" "$DB_PORT"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "temporal-schema: PostgreSQL at $POSTGRES_SEEDS:$DB_PORT did not answer in 120 s" >&2
    exit 1
  fi
  sleep 2
done

sql() {
  temporal-sql-tool --plugin "$DB" --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

sql --db "$DBNAME" create
sql --db "$DBNAME" setup-schema -v 0.0
sql --db "$DBNAME" update-schema -d "$SCHEMA_ROOT/temporal/versioned"

sql --db "$VISIBILITY_DBNAME" create
sql --db "$VISIBILITY_DBNAME" setup-schema -v 0.0
sql --db "$VISIBILITY_DBNAME" update-schema -d "$SCHEMA_ROOT/visibility/versioned"

echo "temporal-schema: databases $DBNAME and $VISIBILITY_DBNAME are up to date"
