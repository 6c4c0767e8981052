#!/usr/bin/env bash
# Sourced by law's job script on a batch worker node, in the job's directory; law renders the
# {{...}} variables before. Jobs start with a bare environment (getenv = false, --export=NONE), so
# everything is set up here:
#
#   shared filesystem ({{taggerflow_shared_fs}} = true): the node sees the checkout; its env.sh
#     (found through the rendered base path) activates the environment;
#   no shared filesystem (false): the repository bundle sent with the job is unpacked into the job's
#     directory and env.sh creates the environment there with the project's own recipe (venv + pip
#     install), or reuses TAGGERFLOW_VENV when the submit file sets it ([taggerflow_*] job_venv).
#
# TAGGERFLOW_DATA comes from the submit file's environment (rendered value as a fallback).

_tf_bootstrap() {
    local shared_fs="{{taggerflow_shared_fs}}"
    local base
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
    source "${base}/env.sh" "" || return 1
    echo "bootstrap: taggerflow at ${TAGGERFLOW_BASE} (shared filesystem: ${shared_fs}) on $(hostname)," \
        "environment ${TAGGERFLOW_VENV}, data in ${TAGGERFLOW_DATA}"
}
_tf_bootstrap
_tf_bootstrap_status=$?
unset -f _tf_bootstrap
return ${_tf_bootstrap_status}
