#!/usr/bin/env bash
# Run a reduced test suite on other Pythons, each in a Debian chroot of the suite that ships it.
#
# Usage: bash .ci/pythons.sh [VERSION...]    (default: 3.12 3.13 3.14)
#
#   3.13  Debian trixie's python3.13          3.14   Debian forky's python3.14
#   3.12  not run: no Debian suite (nor deb-src) ships it any more, and our machines reach no other
#         source of CPython 3.12 (python.org is not reachable); reported as not run
#
# The chroots live outside the checkout, in $FLASK_ASGI_CHROOTS (/var/cache/flask-asgi/chroots),
# and are reused by later runs on the same machine; a missing one is made with debootstrap from
# the apt mirror this machine already uses. The checkout is bind-mounted at /srv/flask-asgi; the
# virtualenv stays in the chroot (/opt/venv-<version>). Needs root.
#
# Exit status: non-zero only when a test failed. A chroot or virtualenv that could not be made
# (no network, no debootstrap, the time budget spent) is reported as SKIPPED and does not fail
# the run. FLASK_ASGI_PYTHONS_DEADLINE (seconds since the epoch) bounds the whole script: no
# setup step starts when it could not finish in time.
set -uo pipefail

cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
CHROOTS=${FLASK_ASGI_CHROOTS:-/var/cache/flask-asgi/chroots}
DEADLINE=${FLASK_ASGI_PYTHONS_DEADLINE:-$(($(date +%s) + 3600))}
# The part of the suite that runs on every version: the bridge, Flask's contexts and hooks,
# WebSockets (flask-asgi's, Flask-SocketIO's, Flask-Sock's), lifespan, body handling and
# limits, metrics, bad input and Flask's own test suite run through flask-asgi (conformance)
# and the packaging. The server matrix, the stress scripts (fuzzers, soak, slow clients) and
# the browser-driven example run on the main Python only: CI stays near 20 minutes on a warm
# machine.
TESTS=(
    tests/test_bridges.py tests/test_flask_semantics.py tests/test_websocket.py
    tests/test_lifespan.py tests/test_conformance.py tests/test_concurrency.py
    tests/test_body.py tests/test_limits.py tests/test_metrics.py tests/test_bad_input.py
    tests/test_sse.py tests/test_streaming.py tests/test_disconnect.py tests/test_shutdown.py
    tests/test_packaging.py
    # unchanged Flask-SocketIO and Flask-Sock apps, and raw werkzeug.socket code (18 s)
    tests/test_wsgi_websocket.py tests/test_flask_sock.py tests/test_flask_socketio.py
    # the stress scripts' short runs (19 s): load that reaches nothing version-specific
    --deselect tests/test_limits.py::test_stress_slow_clients_short
)

# FLASK_ASGI_PYTHONS_TESTS replaces that list (any pytest arguments), to reproduce by hand.
if [[ -n ${FLASK_ASGI_PYTHONS_TESTS:-} ]]; then
    read -r -a TESTS <<<"$FLASK_ASGI_PYTHONS_TESTS"
fi

if (($# == 0)); then
    set -- 3.12 3.13 3.14
fi

skipped=()
failed=()
summary=()

note() { printf '[pythons] %s\n' "$*"; }

left() { echo $((DEADLINE - $(date +%s))); }

# A step that may take up to $1 seconds; refused when the deadline is nearer than that.
within() {
    local need=$1
    shift
    if (($(left) < need)); then
        note "not enough time left ($(left) s) for: $*"
        return 124
    fi
    timeout --kill-after=30 "$need" "$@"
}

mirror() {
    # The Debian mirror this machine's apt uses (deb822 or one-line format).
    local url=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        url=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $url ]]; then
        url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')
    fi
    echo "$url"
}

# Mounts made by this script, unmounted in reverse order on exit (a lazy unmount if busy).
MOUNTS=()
unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
}
kill_chroot_processes() {
    # Processes left running inside the chroot (a test's server): ended by id.
    local root=$1 pid
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        if [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$root" ]]; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}
CURRENT_ROOT=""
cleanup() {
    [[ -n $CURRENT_ROOT ]] && kill_chroot_processes "$CURRENT_ROOT"
    unmount_all
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() { # bind SRC DEST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2" && MOUNTS+=("$2") || return 1
    if [[ ${3:-} == ro ]]; then
        mount -o remount,bind,ro "$2" || true
    fi
}

enter() { # mount what a chroot needs: /proc, /sys, /dev, /dev/pts, /dev/shm, the pip setup
    local root=$1
    CURRENT_ROOT=$root
    mkdir -p "$root/proc" "$root/sys" "$root/dev"
    mount -t proc proc "$root/proc" && MOUNTS+=("$root/proc") || return 1
    mount -t sysfs sys "$root/sys" && MOUNTS+=("$root/sys") || return 1
    bind /dev "$root/dev" || return 1
    bind /dev/pts "$root/dev/pts" || return 1
    mkdir -p "$root/dev/shm"
    mount -t tmpfs shm "$root/dev/shm" && MOUNTS+=("$root/dev/shm") || return 1
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # The host's pip configuration and the local folders it names (find-links, file:// indexes).
    local f dir
    for f in /etc/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt "${HOME:-/root}/.config/pip/pip.conf" "${HOME:-/root}/.pip/pip.conf"; do
        if [[ -f $f ]]; then
            mkdir -p "$root$(dirname "$f")"
            cp "$f" "$root$f"
        fi
    done
    local pip=(python3 -m pip)
    [[ -x $CHECKOUT/.venv/bin/pip ]] && pip=("$CHECKOUT/.venv/bin/pip")
    for dir in $("${pip[@]}" config list 2>/dev/null | sed -e "s/^[^=]*=//" -e "s/'//g" | tr ' ' '\n' |
        sed -e 's|^file://||' -e 's|/simple/*$||' | grep '^/' | sort -u); do
        if [[ -d $dir ]] && ! mountpoint -q "$root$dir"; then
            bind "$dir" "$root$dir" ro || true
        fi
    done
    # The host's CA bundle (it may hold a CA that pip's traffic needs), where PIP_CERT points.
    if [[ -n ${PIP_CERT:-} && -f $PIP_CERT ]]; then
        mkdir -p "$root/etc/flask-asgi"
        cp "$PIP_CERT" "$root/etc/flask-asgi/ca.crt"
    fi
}

leave() {
    [[ -n $CURRENT_ROOT ]] && kill_chroot_processes "$CURRENT_ROOT"
    unmount_all
    CURRENT_ROOT=""
}

in_root() { # in_root ROOT SECONDS COMMAND...: run in the chroot, with the host's PIP_* settings
    local root=$1 need=$2
    shift 2
    local envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive CI="${CI:-}")
    local name
    for name in $(compgen -e | grep '^PIP_'); do
        envs+=("$name=${!name}")
    done
    if [[ -n ${PIP_CERT:-} && -f $PIP_CERT ]]; then
        envs+=(PIP_CERT=/etc/flask-asgi/ca.crt SSL_CERT_FILE=/etc/flask-asgi/ca.crt)
    fi
    within "$need" env -i "${envs[@]}" chroot "$root" "$@"
}

suite_of() {
    case $1 in
    3.13) echo trixie ;;
    3.14) echo forky ;;
    *) return 1 ;;
    esac
}

packages_of() {
    local base=(ca-certificates git gcc g++ make libc6-dev pkg-config)
    case $1 in
    *) echo "${base[*]} python$1 python$1-venv python$1-dev" ;;
    esac
}

interpreter_of() { echo "/usr/bin/python$1"; }

make_chroot() { # the Debian base system of a suite, once
    local suite=$1 root="$CHROOTS/$1"
    [[ -e $root/.flask-asgi-base ]] && return 0
    command -v debootstrap >/dev/null || {
        within 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap ||
            { within 300 apt-get update -q && within 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; } ||
            return 1
    }
    local url script=""
    url=$(mirror)
    [[ -n $url ]] || { note "no Debian mirror found in the apt sources"; return 1; }
    # An older debootstrap has no script for a newer suite: they are all made like sid.
    [[ -e /usr/share/debootstrap/scripts/$suite ]] || script=/usr/share/debootstrap/scripts/sid
    note "debootstrap $suite (from the machine's apt mirror) into $root"
    rm -rf "$root.partial"
    mkdir -p "$CHROOTS"
    within 600 debootstrap --variant=minbase "$suite" "$root.partial" "$url" $script >"$CHROOTS/$suite.debootstrap.log" 2>&1 ||
        { tail -n 20 "$CHROOTS/$suite.debootstrap.log"; return 1; }
    printf 'deb %s %s main\ndeb-src %s %s main\n' "$url" "$suite" "$url" "$suite" >"$root.partial/etc/apt/sources.list"
    touch "$root.partial/.flask-asgi-base"
    mv "$root.partial" "$root"
}

install_python() { # the packages a version needs in its chroot, once
    local version=$1 root=$2
    [[ -e $root/.flask-asgi-python$version ]] && return 0
    enter "$root" || return 1
    note "apt-get install in $(basename "$root"): $(packages_of "$version")"
    # A testing suite's Release file has a Valid-Until date, which a mirror that is a dated
    # snapshot (or a machine whose clock runs ahead of it) has passed: apt would refuse it.
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99flask-asgi"
    in_root "$root" 600 apt-get update -q >"$root.apt.log" 2>&1 &&
        in_root "$root" 900 apt-get install -y -q --no-install-recommends $(packages_of "$version") >>"$root.apt.log" 2>&1 ||
        { tail -n 20 "$root.apt.log"; leave; return 1; }
    leave
    touch "$root/.flask-asgi-python$version"
}

prepare_venv() { # /opt/venv-<version> with the project's test extra (refreshed every run)
    local version=$1 root=$2 venv=/opt/venv-$1
    local python
    python=$(interpreter_of "$version")
    if [[ ! -x $root$venv/bin/python ]]; then
        in_root "$root" 300 "$python" -m venv "$venv" || return 1
    fi
    note "pip install -e .[test] for Python $version"
    in_root "$root" 1500 "$venv/bin/pip" install -q -e "/srv/flask-asgi[test]" >"$root.pip-$version.log" 2>&1 ||
        { tail -n 30 "$root.pip-$version.log"; return 1; }
}

run_version() {
    local version=$1 suite root
    if [[ $version == 3.12 ]]; then
        printf '\n==================== Python 3.12 ====================\n'
        note "NOT RUN Python 3.12: no Debian suite ships it and no CPython 3.12 source is reachable here"
        skipped+=("$version")
        return
    fi
    printf '\n==================== Python %s (Debian %s chroot) ====================\n' "$version" "$(suite_of "$version" || echo '?')"
    suite=$(suite_of "$version") || { note "unknown version $version"; skipped+=("$version"); return; }
    root="$CHROOTS/$suite"
    local started
    started=$(date +%s)
    if ! make_chroot "$suite" || ! install_python "$version" "$root"; then
        note "SKIPPED Python $version: its chroot could not be made"
        skipped+=("$version")
        return
    fi
    enter "$root" || { note "SKIPPED Python $version: could not mount the chroot"; leave; skipped+=("$version"); return; }
    bind "$CHECKOUT" "$root/srv/flask-asgi" || { leave; skipped+=("$version"); return; }
    if [[ -d $CHECKOUT/../shared ]]; then
        bind "$CHECKOUT/../shared" "$root/srv/shared" ro || true
    fi
    if ! prepare_venv "$version" "$root"; then
        note "SKIPPED Python $version: its virtualenv could not be made"
        leave
        skipped+=("$version")
        return
    fi
    in_root "$root" 60 "/opt/venv-$version/bin/python" -VV
    local tests_started rc
    tests_started=$(date +%s)
    # 15 minutes at most (they take about 1.5 on a warm machine); not started without them left.
    in_root "$root" 900 sh -c "cd /srv/flask-asgi && exec /opt/venv-$version/bin/python -m pytest -p no:cacheprovider -q ${TESTS[*]}"
    rc=$?
    if ((rc == 124)) && (($(date +%s) - tests_started < 5)); then
        note "SKIPPED Python $version: no time left for its tests"
        leave
        skipped+=("$version")
        return
    fi
    leave
    local now
    now=$(date +%s)
    summary+=("Python $version: pytest exit $rc, tests $((now - tests_started)) s, setup $((tests_started - started)) s")
    ((rc == 0)) || failed+=("$version")
}

main() {
    mkdir -p "$CHROOTS"
    # One run at a time per machine (the chroots and their virtualenvs are shared).
    exec 9>"$CHROOTS/.lock"
    flock 9
    local version line
    for version in "$@"; do
        run_version "$version"
    done
    printf '\n==================== other Pythons: summary ====================\n'
    for line in "${summary[@]}"; do note "$line"; done
    if ((${#skipped[@]})); then
        note "not run (see above): ${skipped[*]}"
    fi
    if ((${#failed[@]})); then
        note "FAILED on: ${failed[*]}"
        return 1
    fi
}

# On one line, so that bash has read all of it before it runs (an edit of this file while it
# runs cannot change what it does).
main "$@"; exit
