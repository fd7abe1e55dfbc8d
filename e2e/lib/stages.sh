# Shared by e2e/test and e2e/demo: announced, timed stages and a summary at the end.
# shellcheck shell=bash
stage_names=()
stage_times=()
stage() { # name command...
  local name=$1; shift
  local start=${EPOCHREALTIME/./} elapsed
  printf '\n==> %s\n' "$name" >&2
  "$@"
  elapsed=$(( (${EPOCHREALTIME/./} - start) / 100000 ))
  stage_names+=("$name")
  stage_times+=("$(( elapsed / 10 )).$(( elapsed % 10 ))")
  printf '==> %s: done in %ss\n' "$name" "${stage_times[-1]}" >&2
}
stage_summary() {
  printf '\nStage times:\n' >&2
  local i
  for i in "${!stage_names[@]}"; do
    printf '  %-44s %7ss\n' "${stage_names[$i]}" "${stage_times[$i]}" >&2
  done
}
