#!/bin/sh
# Run a pip command with the BuildKit secrets infra/Dockerfile mounts, when present:
#   cacert   -> PIP_CERT (a CA bundle: a TLS-intercepting proxy, a private index)
#   pipindex -> PIP_INDEX_URL (one line: the index URL, which may hold a token)
# Secrets live in /run/secrets only for the RUN that mounts them; no layer keeps them.
set -eu
if [ -s /run/secrets/cacert ]; then
  export PIP_CERT=/run/secrets/cacert
fi
if [ -s /run/secrets/pipindex ]; then
  PIP_INDEX_URL=$(head -n 1 /run/secrets/pipindex)
  export PIP_INDEX_URL
fi
exec "$@"
