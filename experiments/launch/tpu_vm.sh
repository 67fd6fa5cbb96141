#!/usr/bin/env bash
# Train on a Cloud TPU VM or pod slice: create it, install the code on every worker, start the same training
# command on every worker, follow the log, stop, delete. Needs gcloud, logged in (gcloud auth login).
#
#   experiments/launch/tpu_vm.sh --name=r50 --zone=us-central2-b --accelerator-type=v4-8 up -- \
#       --config=configs/tpu.py --workdir=gs://BUCKET/runs/r50 --config.data.data_dir=gs://BUCKET/tensorflow_datasets
#   experiments/launch/tpu_vm.sh --name=r50 --zone=us-central2-b logs
#   experiments/launch/tpu_vm.sh --name=r50 --zone=us-central2-b delete
#
# Every worker runs the identical command; JAX finds the other workers through the TPU metadata. The workdir and
# the data must be on a bucket (gs://...), which every worker and any later VM can reach: rerunning `train` with
# the same workdir, on the same or a recreated VM, resumes from the latest checkpoint.
# --dry-run prints the commands instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: experiments/launch/tpu_vm.sh [--dry-run] --name=NAME --zone=ZONE [options] COMMAND [-- TRAIN_FLAGS...]

Commands:
  create    create the TPU VM or slice
  install   copy the code (or clone --repo) to every worker and install it into a virtualenv there
  train     start `python -m experiments.train TRAIN_FLAGS` on every worker, detached, logging to ~/resnet_jax_run/
  logs      follow the training log of one worker (--worker, default 0)
  stop      send SIGTERM to the training on every worker (it saves a checkpoint, then exits)
  status    show the TPU's state (READY, PREEMPTED, ...)
  delete    delete the TPU VM or slice
  up        create, install, train

Options:
  --name=NAME               TPU name (required)
  --zone=ZONE               zone, e.g. us-central2-b (v4), us-west4-a (v5e) (required)
  --project=PROJECT         Google Cloud project (default: gcloud's)
  --accelerator-type=TYPE   v4-8 (default), v4-32, v5litepod-8, v5litepod-16, v6e-8, ...
  --version=VERSION         TPU software version (default: chosen from the accelerator type)
  --spot                    create a Spot TPU (cheaper, can be preempted: rerun create, install, train to resume)
  --repo=URL [--ref=REF]    install by cloning URL at REF on the workers instead of copying this checkout
  --worker=N                worker for `logs` (default 0)
  --python=PYTHON           interpreter for the workers' virtualenv (default python3.11, installed with apt)
  --dry-run                 print the commands instead of running them
EOF
}

# ---------------------------------------------------------------------------------------------------------------
# Helpers: print a command shell-quoted (one line, copy-pasteable), or run it.
# ---------------------------------------------------------------------------------------------------------------
dry_run=0
safe_word='^[A-Za-z0-9_./:=@,+%-]+$'
option='^(--[A-Za-z0-9_.-]+=)(.*)$'

quote() {
  local words=() arg prefix
  for arg in "$@"; do
    prefix=""
    if [[ "$arg" =~ $safe_word ]]; then
      words+=("$arg")
      continue
    elif [[ "$arg" =~ $option ]]; then
      prefix="${BASH_REMATCH[1]}"  # Quote only the value: --command='...' reads better than '--command=...'.
      arg="${BASH_REMATCH[2]}"
    fi
    words+=("$prefix'${arg//\'/\'\\\'\'}'")
  done
  printf '%s\n' "${words[*]}"
}

run() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@"
  fi
}

die() {
  printf 'tpu_vm.sh: %s\n' "$1" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------
name="" zone="" project="" accelerator_type="v4-8" version="" spot=0 repo="" ref="" worker=0 python="python3.11"
command=""
train_flags=()
while (($#)); do
  arg="$1"
  shift
  value="${arg#*=}"
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --spot) spot=1 ;;
    --name=*) name="$value" ;;
    --zone=*) zone="$value" ;;
    --project=*) project="$value" ;;
    --accelerator-type=*) accelerator_type="$value" ;;
    --version=*) version="$value" ;;
    --repo=*) repo="$value" ;;
    --ref=*) ref="$value" ;;
    --worker=*) worker="$value" ;;
    --python=*) python="$value" ;;
    -h | --help) usage; exit 0 ;;
    --) train_flags=("$@"); break ;;
    create | install | train | logs | stop | status | delete | up)
      [[ -z "$command" ]] || die "one command at a time (got '$command' and '$arg')"
      command="$arg" ;;
    *) usage >&2; die "unknown argument '$arg' (options take the form --option=value)" ;;
  esac
done
[[ -n "$command" ]] || { usage >&2; die "missing COMMAND"; }
[[ -n "$name" ]] || die "--name=NAME is required"
[[ -n "$zone" ]] || die "--zone=ZONE is required"

if [[ -z "$version" ]]; then
  # Google's recommended software versions for JAX per TPU generation.
  case "$accelerator_type" in
    v6e-*) version="v2-alpha-tpuv6e" ;;
    v5p-*) version="v2-alpha-tpuv5" ;;
    v5litepod-* | v5e-*) version="v2-alpha-tpuv5-lite" ;;
    v2-* | v3-* | v4-*) version="tpu-ubuntu2204-base" ;;
    *) die "no default --version for --accelerator-type=$accelerator_type: pass --version=VERSION" ;;
  esac
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[[ -z "$project" ]] || where+=("--project=$project")

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Paths on the workers, relative to the home directory.
code_dir="resnet_jax"
run_dir="resnet_jax_run"
venv="resnet_jax_venv"

# The JAX version pinned for CPU in requirements.txt, installed again with the TPU extra (which adds libtpu).
jax_version="$(sed -n 's/^jax==\([^ ;#]*\).*/\1/p' "$repo_root/requirements.txt" 2>/dev/null | head -n 1)"
jax_tpu="jax[tpu]${jax_version:+==$jax_version}"

# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------
ssh_all() {
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$1"
}

do_create() {
  local extra=()
  if ((spot)); then extra+=(--spot); fi
  run "${gcloud_tpu[@]}" create "$name" "${where[@]}" "--accelerator-type=$accelerator_type" \
    "--version=$version" "${extra[@]}"
}

do_install() {
  if [[ -n "$repo" ]]; then
    local checkout
    checkout="rm -rf $code_dir && git clone $(quote "$repo") $code_dir"
    [[ -z "$ref" ]] || checkout+=" && git -C $code_dir checkout $(quote "$ref")"
    ssh_all "$checkout"
  else
    if ((!dry_run)) && [[ -n "$(git -C "$repo_root" status --porcelain --untracked-files=no)" ]]; then
      echo "tpu_vm.sh: warning: uncommitted changes are not copied (the copy is the committed HEAD)" >&2
    fi
    local tarball="${TMPDIR:-/tmp}/resnet_jax-$name.tar.gz"
    run git -C "$repo_root" archive --format=tar.gz -o "$tarball" HEAD
    run "${gcloud_tpu[@]}" scp "$tarball" "$name:$code_dir.tar.gz" "${where[@]}" --worker=all
    ssh_all "rm -rf $code_dir && mkdir -p $code_dir && tar -xzf $code_dir.tar.gz -C $code_dir"
  fi
  # Ubuntu 22.04 images ship Python 3.10; the project needs 3.11 or newer. JAX is installed with its TPU extra in
  # the same pip call as the pinned requirements, so that pip resolves one consistent set.
  local apt="sudo apt-get update -q && sudo apt-get install -y -q $python $python-venv"
  local get_python="command -v $python >/dev/null || { $apt; }"
  local make_venv="$python -m venv $venv && $venv/bin/pip install -q -U pip"
  local requirements
  requirements="$venv/bin/pip install -q -r $code_dir/requirements.txt $(quote "$jax_tpu")"
  ssh_all "set -e; $get_python; $make_venv; $requirements"
}

check_train_flags() {
  ((${#train_flags[@]})) ||
    die "$command needs the training flags after --, e.g. -- --config=configs/tpu.py --workdir=gs://BUCKET/runs/NAME"
  local flag has_workdir=0
  for flag in "${train_flags[@]}"; do
    case "$flag" in
      --workdir=gs://*) has_workdir=1 ;;
      --workdir=* | --workdir)
        has_workdir=1
        echo "tpu_vm.sh: warning: $flag is not a gs:// bucket: each worker would write to its own disk, and a" \
          "deleted or preempted VM takes its checkpoints with it" >&2 ;;
    esac
  done
  ((has_workdir)) || die "pass --workdir=gs://BUCKET/runs/NAME after -- (checkpoints and logs go there)"
}

do_train() {
  # setsid + nohup: the training outlives the ssh session and leads its own process group, which `stop` signals.
  local train
  train="$(quote "../$venv/bin/python" -m experiments.train "${train_flags[@]}")"
  local log="../$run_dir/train.log" pid="../$run_dir/train.pid"
  ssh_all "mkdir -p $run_dir && cd $code_dir && { setsid nohup $train >> $log 2>&1 < /dev/null & echo \$! > $pid; }"
}

do_logs() {
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" "--worker=$worker" --command="tail -n 200 -F $run_dir/train.log"
}

do_stop() {
  ssh_all "kill -TERM -- -\"\$(cat $run_dir/train.pid)\" && echo sent SIGTERM to the training on \$(hostname)"
}

do_status() {
  run "${gcloud_tpu[@]}" describe "$name" "${where[@]}" --format="value(state,acceleratorType,health)"
}

do_delete() {
  run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet
}

case "$command" in train | up) check_train_flags ;; esac
case "$command" in
  create) do_create ;;
  install) do_install ;;
  train) do_train ;;
  logs) do_logs ;;
  stop) do_stop ;;
  status) do_status ;;
  delete) do_delete ;;
  up) do_create; do_install; do_train ;;
esac
