#!/usr/bin/env bash
# Enforces the dependency direction of DESIGN.md:
#   hcl/ and api/ import nothing of ours; fsm/ never imports cluster/, engine/,
#   httpapi/ (or anything above it); cluster/ never imports engine/ or httpapi/.
set -euo pipefail
mod=github.com/lockstep-io/lockstep
fail=0
check() { # package, forbidden import regex
  local pkg=$1 forbidden=$2
  local bad
  bad=$(go list -f '{{join .Imports "\n"}}' "./$pkg/..." | grep -E "^$mod/($forbidden)(/|$)" || true)
  if [ -n "$bad" ]; then
    echo "import boundary: $pkg/ must not import:"; echo "$bad" | sed 's/^/  /'
    fail=1
  fi
}
check hcl     '.*'
check api     '.*'
check fsm     'cluster|engine|httpapi|agent|worker|api|cmd'
check cluster 'engine|httpapi|agent|worker|api|cmd'
check engine  'httpapi|agent|worker|api|cmd'
check httpapi 'agent|worker|cmd'
check worker  'fsm|cluster|engine|httpapi|agent|cmd|hcl'
if [ $fail -ne 0 ]; then exit 1; fi
echo "import boundaries ok"
