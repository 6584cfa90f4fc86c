#!/usr/bin/env bash
# Writes charts/lifeboat/README.md: every value of charts/lifeboat/values.yaml with its default
# and the comment above it. A key whose block is a list, or whose children carry no comment of
# their own, is one value (its default written inline); other blocks are sections whose children
# are listed. Fails on a value without a comment. A test re-generates and fails on drift.
# Usage: chart-readme.sh [README to write] [values.yaml to read]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/charts/lifeboat/README.md}
values=${2:-$repo/charts/lifeboat/values.yaml}
table=$(awk '
function indent(s) { match(s, /^ */); return RLENGTH }
function trim(s) { sub(/^ +/, "", s); sub(/ +$/, "", s); return s }
function is_comment(s) { return s ~ /^ *#/ }
# The block of line i: the lines after it indented deeper (or list items at its own indent).
function block_end(i,   base, j) {
  base = indent(L[i])
  for (j = i + 1; j <= n; j++) {
    if (L[j] ~ /^ *$/ || is_comment(L[j])) continue
    if (indent(L[j]) > base || (indent(L[j]) == base && trim(L[j]) ~ /^- /)) continue
    break
  }
  while (j - 1 > i && (L[j - 1] ~ /^ *$/ || is_comment(L[j - 1]))) j--
  return j - 1
}
# The YAML of lines s..e (no comments) in flow style, on one line.
function flow(s, e,   base, out, i, j, k, t, key, val, sep, list) {
  while (s <= e && (L[s] ~ /^ *$/ || is_comment(L[s]))) s++
  if (s > e) return ""
  base = indent(L[s]); list = trim(L[s]) ~ /^- /
  out = ""; sep = ""
  for (i = s; i <= e; i = j) {
    for (j = i + 1; j <= e; j++)
      if (!(L[j] ~ /^ *$/ || is_comment(L[j])) && indent(L[j]) == base) break
    if (list) {
      t = L[i]; sub(/- /, "  ", t); saved = L[i]; L[i] = t
      out = out sep flow(i, j - 1); L[i] = saved
    } else {
      t = trim(L[i]); k = index(t, ":"); key = substr(t, 1, k - 1); val = trim(substr(t, k + 1))
      out = out sep key ": " (val != "" ? val : flow(i + 1, j - 1))
    }
    sep = ", "
  }
  return list ? "[" out "]" : "{" out "}"
}
function row(path, def, desc) {
  if (desc == "") { printf "chart-readme: %s has no comment in values.yaml\n", path > "/dev/stderr"; bad = 1 }
  gsub(/\|/, "\\|", def); gsub(/\|/, "\\|", desc)
  printf "| `%s` | %s | %s |\n", path, (def == "" ? "" : "`" def "`"), desc
}
{ L[++n] = $0 }
END {
  desc = ""; depth = 0
  for (i = 1; i <= n; i++) {
    if (L[i] ~ /^ *$/) { desc = ""; continue }
    if (is_comment(L[i])) { t = trim(L[i]); sub(/^# ?/, "", t); desc = (desc == "" ? t : desc " " t); continue }
    ind = indent(L[i]); t = trim(L[i]); k = index(t, ":"); key = substr(t, 1, k - 1); val = trim(substr(t, k + 1))
    while (depth > 0 && IND[depth] >= ind) depth--
    path = ""; for (d = 1; d <= depth; d++) path = path KEY[d] "."; path = path key
    if (val != "") { row(path, val, desc); desc = ""; continue }
    e = block_end(i); commented = 0; first = ""
    for (j = i + 1; j <= e; j++) {
      if (is_comment(L[j])) commented = 1
      else if (first == "" && L[j] !~ /^ *$/) first = trim(L[j])
    }
    if (desc != "" && (first ~ /^- / || !commented)) { row(path, flow(i + 1, e), desc); desc = ""; i = e; continue }
    if (desc != "") row(path, "", desc)
    desc = ""; depth++; IND[depth] = ind; KEY[depth] = key
  }
  exit bad
}' "$values")
{
  cat <<'HEAD'
# The Lifeboat chart

Backups, verified restores and disaster-recovery drills with measured RPO and RTO, for PostgreSQL,
Redis, object storage and Kubernetes state. Install it with

```sh
helm install lifeboat charts/lifeboat --namespace lifeboat-system --create-namespace
```

or apply the same manifests rendered with the defaults: `kubectl apply -k deploy/`. The README of
the repository, docs/operations.md and docs/upgrading.md say how to run it; docs/security.md what
it defends against. Every value is checked by values.schema.json; `helm install` refuses an
unknown key.

On OpenShift, add `-f charts/lifeboat/ci/openshift-values.yaml`: its restricted SCC assigns the
pods' user and group.

## Values

Generated from the comments of values.yaml by hack/chart-readme.sh; do not edit by hand.

| Key | Default | Description |
|---|---|---|
HEAD
  echo "$table"
} >"$out"
echo "wrote $out"
