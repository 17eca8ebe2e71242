#!/usr/bin/env bash
# The mutation score, measured by a tool that writes the mutants itself (mutmut 3; [tool.mutmut] in
# pyproject.toml names the modules and the fast tests that cover them). Prints the score per module and in
# all, counting every mutant but those docs/testing.md lists as equivalent (scripts/mutation_equivalent.txt:
# one `mutant-name  reason` a line). Results stay in mutants/ (git-ignored), so a second run retests only
# what changed; `mutmut show NAME` prints one mutant's diff.
#   bash scripts/mutation.sh            # all listed modules, as many mutants at a time as cores
#   JOBS=1 bash scripts/mutation.sh     # one at a time
#   bash scripts/mutation.sh omniseg.store.merge omniseg.models.masks   # these modules only (each mutant of them
#                                       # is tested again: mutmut retests every mutant a run names)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc)}
start=$(date +%s)
log=$(mktemp)
globs=() modules=()
for m in "$@"; do globs+=("$m.*"); modules+=(--module "$m"); done
if ! mutmut run --max-children "$jobs" "${globs[@]}" >"$log" 2>&1; then
    tail -40 "$log"
    echo "mutmut run failed (its log: $log)" >&2
    exit 1
fi
minutes=$(python3 -c "print(f'{($(date +%s) - $start) / 60:.1f}')")
mutmut results --all true 2>/dev/null | python3 scripts/mutation_score.py --minutes "$minutes" "${modules[@]}"
