#!/usr/bin/env bash
# Train on one machine: by default one process driving all its GPUs (JAX's data parallelism needs nothing more).
# With --processes=N it starts N processes on this machine instead, joined by jax.distributed through explicit
# --coordinator_address/--num_processes/--process_id flags, with the GPUs split evenly between them, or with
# --cpu-devices=K simulated CPU devices each: a rehearsal of a multi-host launch on any computer.
#
#   experiments/launch/multi_gpu.sh -- --config=configs/gpu.py --workdir=runs/r50
#   experiments/launch/multi_gpu.sh --gpus=0,1,2,3 -- --config=configs/gpu.py --workdir=runs/r50_4gpu
#   experiments/launch/multi_gpu.sh --processes=2 --cpu-devices=2 -- --config=configs/shapes.py --workdir=runs/rehearsal
#
# SIGTERM (a scheduler, `kill`) makes training save a checkpoint and exit, and rerunning the same command resumes.
# With --processes, Ctrl-C and SIGTERM are passed on to every process as SIGTERM. --dry-run prints the commands
# instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: experiments/launch/multi_gpu.sh [--dry-run] [options] -- TRAIN_FLAGS...

Options:
  --gpus=LIST          GPUs to use, e.g. 0,1,2,3 (default: all visible)
  --processes=N        start N processes on this machine (default 1)
  --cpu-devices=K      run on the CPU with K simulated devices per process instead of GPUs
  --port=PORT          coordinator port on 127.0.0.1 when N > 1 (default 23456)
  --log-dir=DIR        where processes 1..N-1 write their logs (default ${TMPDIR:-/tmp}/resnet_jax_processes);
                       process 0 logs to this terminal
  --python=PYTHON      interpreter (default python3)
  --dry-run            print the commands instead of running them
EOF
}

dry_run=0
safe_word='^[A-Za-z0-9_./:=@,+%-]+$'
option='^(--[A-Za-z0-9_.-]+=)(.*)$'

# Prints a command shell-quoted on one line (copy-pasteable).
quote() {
  local words=() arg prefix
  for arg in "$@"; do
    prefix=""
    if [[ "$arg" =~ $safe_word ]]; then
      words+=("$arg")
      continue
    elif [[ "$arg" =~ $option ]]; then
      prefix="${BASH_REMATCH[1]}"
      arg="${BASH_REMATCH[2]}"
    fi
    words+=("$prefix'${arg//\'/\'\\\'\'}'")
  done
  printf '%s\n' "${words[*]}"
}

die() {
  printf 'multi_gpu.sh: %s\n' "$1" >&2
  exit 2
}

gpus="" processes=1 cpu_devices=0 port=23456 log_dir="${TMPDIR:-/tmp}/resnet_jax_processes" python="python3"
train_flags=()
while (($#)); do
  arg="$1"
  shift
  value="${arg#*=}"
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --gpus=*) gpus="$value" ;;
    --processes=*) processes="$value" ;;
    --cpu-devices=*) cpu_devices="$value" ;;
    --port=*) port="$value" ;;
    --log-dir=*) log_dir="$value" ;;
    --python=*) python="$value" ;;
    -h | --help) usage; exit 0 ;;
    --) train_flags=("$@"); break ;;
    *) usage >&2; die "unknown argument '$arg' (options take the form --option=value; training flags go after --)" ;;
  esac
done
((${#train_flags[@]})) || die "pass the training flags after --, e.g. -- --config=configs/gpu.py --workdir=runs/NAME"
[[ "$processes" =~ ^[1-9][0-9]*$ ]] || die "--processes=$processes: expected a positive integer"
[[ "$cpu_devices" =~ ^[0-9]+$ ]] || die "--cpu-devices=$cpu_devices: expected a device count (0, the default: GPUs)"

train=("$python" -m experiments.train "${train_flags[@]}")
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if ((dry_run)); then quote cd "$repo_root"; else cd "$repo_root"; fi

# Environment of process $1: which devices it sees.
process_env() {
  local index="$1"
  if ((cpu_devices)); then
    echo "JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=$cpu_devices"
  elif ((processes == 1)); then
    [[ -z "$gpus" ]] || echo "CUDA_VISIBLE_DEVICES=$gpus"
  else
    local per=$((${#gpu_list[@]} / processes))
    local group=("${gpu_list[@]:index*per:per}")
    local IFS=,
    echo "CUDA_VISIBLE_DEVICES=${group[*]}"
  fi
}

gpu_list=()
if ((processes > 1 && !cpu_devices)); then
  if [[ -z "$gpus" ]]; then
    command -v nvidia-smi >/dev/null || die "no nvidia-smi to list the GPUs: pass --gpus=0,1,... or --cpu-devices=K"
    gpus="$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)"
  fi
  IFS=, read -r -a gpu_list <<<"$gpus"
  ((${#gpu_list[@]} % processes == 0)) ||
    die "${#gpu_list[@]} GPUs ($gpus) cannot be split evenly over $processes processes: change --processes or --gpus"
fi

if ((processes == 1)); then
  read -r -a env_vars <<<"$(process_env 0)"
  command=("${train[@]}")
  ((${#env_vars[@]} == 0)) || command=(env "${env_vars[@]}" "${train[@]}")
  if ((dry_run)); then
    quote "${command[@]}"
  else
    exec "${command[@]}"
  fi
  exit 0
fi

pids=()
((dry_run)) || mkdir -p "$log_dir"
for ((i = 0; i < processes; i++)); do
  read -r -a env_vars <<<"$(process_env "$i")"
  command=(env "${env_vars[@]}" "${train[@]}" "--coordinator_address=127.0.0.1:$port" "--num_processes=$processes"
    "--process_id=$i")
  log="$log_dir/process_$i.log"
  if ((dry_run)); then
    if ((i == 0)); then
      echo "$(quote "${command[@]}") &"
    else
      echo "$(quote "${command[@]}") > $(quote "$log") 2>&1 &"
    fi
  elif ((i == 0)); then
    "${command[@]}" &
    pids+=("$!")
  else
    "${command[@]}" >"$log" 2>&1 &
    pids+=("$!")
  fi
done
((dry_run)) && exit 0

echo "multi_gpu.sh: started $processes processes; processes 1..$((processes - 1)) log to $log_dir" >&2
# Background processes of a script ignore Ctrl-C; turn it (and SIGTERM) into a SIGTERM for every process, so that
# they all checkpoint. If one process fails, the others would wait for it in their next collective until JAX's
# heartbeat timeout: stop them at once instead. The exit status is the first failure's.
stop_all() {
  # Once only: a second SIGTERM could interrupt a checkpoint being written.
  ((stopping)) || kill -TERM "${pids[@]}" 2>/dev/null || true
  stopping=1
}
trap stop_all INT TERM
status=0 stopping=0
while ((${#pids[@]})); do
  sleep 1
  running=()
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      running+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code && !status)); then
      status=$code
      echo "multi_gpu.sh: process $pid exited with status $code: stopping the others" >&2
    fi
  done
  pids=("${running[@]}")
  if ((status && ${#pids[@]})); then stop_all; fi
done
exit "$status"
