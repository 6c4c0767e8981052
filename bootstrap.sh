#!/usr/bin/env bash
# Sourced by law's job script on a batch worker node (rendered by law: the {{...}} variables).
# Jobs start with a bare environment, so everything is set up here. With a shared filesystem
# the checkout and its environment are used where they are.

export TAGGERFLOW_BASE="{{taggerflow_base}}"
export TAGGERFLOW_DATA="{{taggerflow_data}}"
if [ ! -f "${TAGGERFLOW_BASE}/env.sh" ]; then
    echo "bootstrap: ${TAGGERFLOW_BASE}/env.sh not found: the node does not see the checkout" >&2
    return 1
fi
source "${TAGGERFLOW_BASE}/env.sh" || return 1
echo "bootstrap: taggerflow at ${TAGGERFLOW_BASE} on $(hostname), data in ${TAGGERFLOW_DATA}"
