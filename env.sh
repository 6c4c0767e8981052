# taggerflow environment: `source env.sh` on a login node (bash or zsh).
# Creates the virtual environment on first use (installs the project into it), activates it,
# exports law's settings and indexes the tasks. Sourcing it again is harmless and fast.
#
# Overridable before sourcing:
#   TAGGERFLOW_DATA    where outputs go (default: <repo>/data)
#   TAGGERFLOW_VENV    the virtual environment (default: <repo>/.venv)
#   TAGGERFLOW_PYTHON  the interpreter to create it with (default: python3.11, python3.12, python3)

_tf_sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

_tf_setup() {
    local this_file
    if [ -n "${ZSH_VERSION:-}" ]; then
        this_file="${(%):-%x}"
    else
        this_file="${BASH_SOURCE[0]}"
    fi
    local base
    base="$(cd "$(dirname "${this_file}")" && pwd)" || return 1
    export TAGGERFLOW_BASE="${base}"
    export TAGGERFLOW_DATA="${TAGGERFLOW_DATA:-${base}/data}"
    export TAGGERFLOW_VENV="${TAGGERFLOW_VENV:-${base}/.venv}"

    # The install stamp records the content of pyproject.toml and the checkout the environment was
    # installed from. Only that checkout re-installs when its pyproject.toml changes; another checkout
    # sharing TAGGERFLOW_VENV (a second clone, a worktree) uses it as it is (its own code comes first
    # through PYTHONPATH below), so sourcing there never re-points the editable install. Batch jobs
    # (LAW_JOB_HOME set) only install a missing environment, so that hundreds of jobs never
    # pip-install into one shared venv at once.
    local stamp="${TAGGERFLOW_VENV}/.taggerflow_installed"
    local want
    want="$(_tf_sha256 "${base}/pyproject.toml") ${base}"
    local have=""
    [ -f "${stamp}" ] && have="$(cat "${stamp}")"
    local install=0
    if [ ! -x "${TAGGERFLOW_VENV}/bin/python" ] || [ ! -f "${stamp}" ]; then
        install=1
    elif [ -z "${LAW_JOB_HOME:-}" ] && [ "${have}" != "${want}" ]; then
        local owner="${have#* }"
        if [ -z "${have}" ]; then
            # stamp of an older env.sh (empty): adopt it if the editable install points here
            owner="$(cd / && PYTHONPATH= "${TAGGERFLOW_VENV}/bin/python" -c \
                'import os, taggerflow; print(os.path.dirname(os.path.dirname(os.path.abspath(taggerflow.__file__))))' 2>/dev/null)"
            [ "${owner}" = "${base}" ] && printf '%s\n' "${want}" >"${stamp}"
        elif [ "${owner}" = "${base}" ]; then
            install=1   # this checkout's pyproject.toml changed
        else
            [ "${have%% *}" = "${want%% *}" ] || echo "taggerflow: ${TAGGERFLOW_VENV} was installed from" \
                "${owner}, whose pyproject.toml differs from this checkout's: not re-installing it from here" \
                "(source env.sh there, or set TAGGERFLOW_VENV to an environment of this checkout)" >&2
        fi
    fi
    if [ "${install}" = "1" ]; then
        local py="${TAGGERFLOW_PYTHON:-}"
        if [ -z "${py}" ]; then
            for cand in python3.11 python3.12 python3.13 python3; do
                if command -v "${cand}" >/dev/null 2>&1 && "${cand}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
                    py="${cand}"; break
                fi
            done
        fi
        if [ -z "${py}" ]; then
            echo "taggerflow: needs Python >= 3.11 (set TAGGERFLOW_PYTHON)" >&2
            return 1
        fi
        echo "taggerflow: installing the environment into ${TAGGERFLOW_VENV} (once; a few minutes)"
        [ -x "${TAGGERFLOW_VENV}/bin/python" ] || "${py}" -m venv "${TAGGERFLOW_VENV}" || return 1
        # in a batch job pip keeps no cache: the job's disk holds the environment only
        local pip_cache=""
        [ -n "${LAW_JOB_HOME:-}" ] && pip_cache="--no-cache-dir"
        "${TAGGERFLOW_VENV}/bin/python" -m pip install --quiet ${pip_cache} --upgrade pip || return 1
        "${TAGGERFLOW_VENV}/bin/python" -m pip install --quiet ${pip_cache} -e "${base}[test]" || return 1
        printf '%s\n' "${want}" >"${stamp}"
    fi
    # activate (the venv's activate script is POSIX, works in bash and zsh)
    if [ "${VIRTUAL_ENV:-}" != "${TAGGERFLOW_VENV}" ]; then
        . "${TAGGERFLOW_VENV}/bin/activate" || return 1
    fi

    case ":${PYTHONPATH:-}:" in
        *":${base}:"*) ;;
        *) export PYTHONPATH="${base}${PYTHONPATH:+:${PYTHONPATH}}" ;;
    esac
    export LAW_HOME="${base}/.law"
    export LAW_CONFIG_FILE="${base}/law.cfg"
    export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
    mkdir -p "${LAW_HOME}" "${TAGGERFLOW_DATA}"

    # batch jobs (law sets LAW_JOB_HOME) run their task by module and need neither index nor completion
    [ -n "${LAW_JOB_HOME:-}" ] && return 0
    # index the tasks (quietly; fast)
    law index -q >/dev/null 2>&1 || law index
    if [ -n "${ZSH_VERSION:-}" ] || [ -n "${BASH_VERSION:-}" ]; then
        . "$(law completion)" 2>/dev/null || true
    fi
}
_tf_setup
_tf_status=$?
unset -f _tf_setup _tf_sha256
return ${_tf_status} 2>/dev/null || exit ${_tf_status}
