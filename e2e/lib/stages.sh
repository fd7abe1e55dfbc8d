# Shared by e2e/test, e2e/test-timescaledb and e2e/demo: announced, timed stages, a
# summary at the end, and a failing stage that says which it was, its exit status and
# where its log is.
# shellcheck shell=bash
stage_names=()
stage_times=()
stage_current=""
stage_log=""
stage_started=0

# The scripts run under `set -e`: the first failing command ends them. errtrace makes the
# ERR trap fire inside functions too, so the failure is reported before the EXIT traps
# clean up.
set -o errtrace
_stage_failed() {
  local status=$1
  # Only the script itself reports: a failing command substitution fails its caller too.
  [[ -n "$stage_current" && "$BASHPID" == "$$" ]] || return 0
  local elapsed=$(( (${EPOCHREALTIME/./} - stage_started) / 100000 ))
  printf '\n==> FAILED: stage "%s" exited with status %s after %s.%ss\n' \
    "$stage_current" "$status" "$(( elapsed / 10 ))" "$(( elapsed % 10 ))" >&2
  if [[ -n "$stage_log" ]]; then
    printf '==> its log: %s\n' "$stage_log" >&2
  else
    printf '==> its output is above\n' >&2
  fi
  # Reported once, however many functions the failure unwinds through.
  stage_current=""
}
trap '_stage_failed $?' ERR

stage() { # name command...
  stage_log_for "$1" "" "${@:2}"
}

stage_log_for() { # name log command... (log: where the command's own output goes)
  local name=$1 log=$2; shift 2
  stage_current=$name
  stage_log=$log
  stage_started=${EPOCHREALTIME/./}
  printf '\n==> %s\n' "$name" >&2
  "$@"
  local elapsed=$(( (${EPOCHREALTIME/./} - stage_started) / 100000 ))
  stage_current=""
  stage_names+=("$name")
  stage_times+=("$(( elapsed / 10 )).$(( elapsed % 10 ))")
  printf '==> %s: done in %ss\n' "$name" "${stage_times[-1]}" >&2
}

stage_summary() {
  printf '\nStage times:\n' >&2
  local i
  for i in "${!stage_names[@]}"; do
    printf '  %-48s %7ss\n' "${stage_names[$i]}" "${stage_times[$i]}" >&2
  done
}

keep_logs() { # state-dir: copies its logs to target/e2e-failed-logs/<its name>/ (replacing older ones)
  local from=$1 to
  to="$(dirname "$from")/e2e-failed-logs/$(basename "$from")"
  [[ -d "$from" ]] || return 0
  rm -rf "$to" && mkdir -p "$to"
  cp "$from"/*.log "$to"/ 2>/dev/null || true
  printf '==> the cluster'"'"'s logs are kept in %s\n' "$to" >&2
}
