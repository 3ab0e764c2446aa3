# Sourced by the comparison scripts: run two commands side by side, each pinned to its own CPU core.
#
#   run_pair LOG_A "command a ..." LOG_B "command b ..."
#
# A comparison of two training runs "for the same time budget" is fair only when both get the same machine. On a
# 2-core machine, running them one after the other on both cores is fair too, but takes twice the wall clock; pinning
# each to one core (taskset, one torch thread: medseg counts the cores it may use) halves the wall clock and keeps
# the two runs equal. Without taskset (or PARALLEL=0) the pair runs one after the other on every core.
# Each command's output goes to its log file; a failure of either is reported and fails the pair.

run_pair() {
    local log_a=$1 command_a=$2 log_b=$3 command_b=$4
    if [[ ${PARALLEL:-1} == 0 ]] || ! command -v taskset >/dev/null || (( $(nproc) < 2 )); then
        bash -c "$command_a" >"$log_a" 2>&1 || { echo "error: failed, see $log_a" >&2; return 1; }
        bash -c "$command_b" >"$log_b" 2>&1 || { echo "error: failed, see $log_b" >&2; return 1; }
        return 0
    fi
    local first second status=0
    read -r first second < <(${PYTHON:-python} -c 'import os; print(*sorted(os.sched_getaffinity(0))[:2])')
    OMP_NUM_THREADS=1 taskset -c "$first" bash -c "$command_a" >"$log_a" 2>&1 &
    local pid_a=$!
    OMP_NUM_THREADS=1 taskset -c "$second" bash -c "$command_b" >"$log_b" 2>&1 &
    local pid_b=$!
    wait "$pid_a" || { echo "error: failed, see $log_a" >&2; status=1; }
    wait "$pid_b" || { echo "error: failed, see $log_b" >&2; status=1; }
    return $status
}
