#!/usr/bin/env bash
# Sourced by law's job script on a batch worker node, in the job's directory; law renders the
# {{...}} variables before. Jobs start with a bare environment (getenv = false, --export=NONE): the
# submit file gives PATH and TAGGERFLOW_DATA (and TAGGERFLOW_VENV where set), everything else is set
# up here:
#
#   shared filesystem ({{taggerflow_shared_fs}} = true): the node sees the checkout; its env.sh
#     (found through the rendered base path) activates the environment;
#   no shared filesystem (false): the repository bundle sent with the job is unpacked into the job's
#     directory and env.sh activates the environment, which is, in this order:
#       - TAGGERFLOW_VENV when the submit file sets it ([taggerflow_*] job_venv, e.g. on CVMFS);
#       - <venv_dir>/taggerflow-<sha256 of pyproject.toml> ([taggerflow_*] venv_dir, a directory all
#         workers see and may write): built once by the first job (a lock directory beside it), the
#         other jobs wait for its install stamp; the code always comes from the bundle (PYTHONPATH);
#       - otherwise <job directory>/repo/taggerflow/.venv, created by env.sh in the job (3-4 GB).
#
# TAGGERFLOW_DATA comes from the submit file's environment (rendered value as a fallback).

_tf_shared_venv() {
    # $1: the directory of shared environments, $2: the unpacked checkout; sets TAGGERFLOW_VENV and,
    # where this job builds it, _tf_venv_lock (removed once env.sh has installed it)
    local venv_dir="$1" base="$2"
    local key
    key="$(sha256sum "${base}/pyproject.toml" | cut -c1-16)" || return 1
    export TAGGERFLOW_VENV="${venv_dir}/taggerflow-${key}"
    [ -f "${TAGGERFLOW_VENV}/.taggerflow_installed" ] && return 0
    mkdir -p "${venv_dir}" || return 1
    local lock="${TAGGERFLOW_VENV}.lock"
    local waited=0 wait_s="${TAGGERFLOW_VENV_WAIT:-3600}"
    while [ ! -f "${TAGGERFLOW_VENV}/.taggerflow_installed" ]; do
        # the first job to create the lock builds it; if that job fails it removes the lock and a
        # waiting job takes over
        if mkdir "${lock}" 2>/dev/null; then
            echo "$(hostname) $$ $(date -u +%FT%TZ)" >"${lock}/owner"
            _tf_venv_lock="${lock}"
            echo "bootstrap: building the environment ${TAGGERFLOW_VENV} for the jobs of this pyproject.toml"
            return 0
        fi
        if [ "${waited}" -ge "${wait_s}" ]; then
            echo "bootstrap: ${TAGGERFLOW_VENV} not built after ${waited} s (lock ${lock}, held by" \
                "$(cat "${lock}/owner" 2>/dev/null || echo nobody)); if that job died, remove ${lock}" \
                "and ${TAGGERFLOW_VENV}" >&2
            return 1
        fi
        [ "${waited}" = "0" ] && echo "bootstrap: waiting for the environment ${TAGGERFLOW_VENV}" \
            "another job builds ($(cat "${lock}/owner" 2>/dev/null))"
        sleep 2
        waited=$((waited + 2))
    done
}

_tf_bootstrap() {
    local shared_fs="{{taggerflow_shared_fs}}"
    local base
    _tf_venv_lock=""
    # condor_starter sets no HOME; matplotlib, keras and pip want a writable one
    if [ -z "${HOME:-}" ] || [ ! -w "${HOME}" ]; then
        export HOME="${LAW_JOB_HOME:-${PWD}}"
    fi
    if [ "${shared_fs}" = "false" ]; then
        local bundle="{{taggerflow_bundle}}"
        if [ -z "${bundle}" ]; then
            echo "bootstrap: no repository bundle among the job's input files" >&2
            return 1
        fi
        # law links the input files into the job's home; fall back to the initial directory
        [ -f "${bundle}" ] || bundle="${LAW_JOB_INIT_DIR:-.}/${bundle}"
        if [ ! -f "${bundle}" ]; then
            echo "bootstrap: repository bundle ${bundle} not found" >&2
            return 1
        fi
        local unpack_dir="${LAW_JOB_HOME:-${PWD}}/repo"
        mkdir -p "${unpack_dir}" && tar -xzf "${bundle}" -C "${unpack_dir}" || return 1
        base="${unpack_dir}/taggerflow"
        local venv_dir="{{taggerflow_venv_dir}}"
        if [ -z "${TAGGERFLOW_VENV:-}" ] && [ -n "${venv_dir}" ]; then
            _tf_shared_venv "${venv_dir}" "${base}" || return 1
        fi
        export TAGGERFLOW_VENV="${TAGGERFLOW_VENV:-${base}/.venv}"
    else
        base="{{taggerflow_base}}"
        if [ ! -f "${base}/env.sh" ]; then
            echo "bootstrap: ${base}/env.sh not found: the node does not see the checkout" \
                "(submit with --htcondor-shared-fs False to send a bundle instead)" >&2
            return 1
        fi
    fi
    export TAGGERFLOW_DATA="${TAGGERFLOW_DATA:-{{taggerflow_data}}}"
    local status=0
    source "${base}/env.sh" "" || status=1
    if [ -n "${_tf_venv_lock}" ]; then
        # built (stamp written by env.sh) or failed: the lock goes; a failed half-built one too
        [ "${status}" = "0" ] || rm -rf "${TAGGERFLOW_VENV}"
        rm -rf "${_tf_venv_lock}"
    fi
    [ "${status}" = "0" ] || return 1
    echo "bootstrap: taggerflow at ${TAGGERFLOW_BASE} (shared filesystem: ${shared_fs}) on $(hostname)," \
        "environment ${TAGGERFLOW_VENV}, data in ${TAGGERFLOW_DATA}"
}
_tf_bootstrap
_tf_bootstrap_status=$?
unset -f _tf_bootstrap _tf_shared_venv
unset _tf_venv_lock
return ${_tf_bootstrap_status}
