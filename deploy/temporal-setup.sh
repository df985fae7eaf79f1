#!/bin/sh
# One-shot (temporalio/admin-tools, or anywhere the `temporal` CLI runs): wait for the Temporal
# frontend, create the namespace if it is missing, then create deployctl's custom search attributes
# that are missing. Safe to run again. The workers also create missing attributes at start-up; this
# makes them exist before the first worker starts. (Temporal Cloud: use tcld or the Cloud UI instead,
# see docs/operations.md.)
#
#   TEMPORAL_ADDRESS=127.0.0.1:7233 TEMPORAL_NAMESPACE=default sh deploy/temporal-setup.sh
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TEMPORAL_NAMESPACE:=default}"
: "${NAMESPACE_RETENTION:=30d}"
: "${TEMPORAL_CLI:=temporal}"

# name:type, the same list as workflows/search_attributes.py
SEARCH_ATTRIBUTES="
DeployService:Keyword
DeployEnvironment:Keyword
DeployCloud:Keyword
DeployStep:Keyword
DeployOutcome:Keyword
DeployWaitingOn:KeywordList
"

t() {
  "$TEMPORAL_CLI" "$@" --address "$TEMPORAL_ADDRESS"
}

tries=0
until t operator cluster health >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 90 ]; then
    echo "temporal-setup: no healthy Temporal frontend at $TEMPORAL_ADDRESS after 180 s" >&2
    exit 1
  fi
  sleep 2
done

if t operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "temporal-setup: namespace $TEMPORAL_NAMESPACE exists"
else
  t operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention "$NAMESPACE_RETENTION"
  echo "temporal-setup: created namespace $TEMPORAL_NAMESPACE (retention $NAMESPACE_RETENTION)"
fi

# A new namespace takes a few seconds to reach the frontend's cache: retry the whole pass.
# One attribute per call: `create` with several --name flags only adds the first of them.
pass=0
while :; do
  failed=""
  existing=$(t operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" --output json 2>/dev/null) || existing=""
  for entry in $SEARCH_ATTRIBUTES; do
    name=${entry%%:*}
    kind=${entry#*:}
    if printf '%s' "$existing" | grep -q "\"$name\""; then
      continue
    fi
    if t operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "$kind"; then
      echo "temporal-setup: created search attribute $name ($kind)"
    else
      failed="$failed $name"
    fi
  done
  [ -z "$failed" ] && break
  pass=$((pass + 1))
  if [ "$pass" -ge 15 ]; then
    echo "temporal-setup: could not create search attributes:$failed" >&2
    exit 1
  fi
  sleep 2
done
echo "temporal-setup: search attributes ready in namespace $TEMPORAL_NAMESPACE"
