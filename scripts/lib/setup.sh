# Shared set-up for scripts/test, scripts/demo and scripts/bench (sourced, not run).

# Debian packages the project's tests, demo and benchmarks need: program -> package.
declare -A CHASSIS_DEBIAN_NEEDS=(
  [mariadbd]=mariadb-server
  [mariadb-install-db]=mariadb-server
  [mariadb]=mariadb-client
  [mariadb_config]=libmariadb-dev
  [pkg-config]=pkg-config
  [openssl]=openssl
  [setpriv]=util-linux
  [sysbench]=sysbench
  [prometheus]=prometheus
  [haproxy]=haproxy
  [pt-fingerprint]=percona-toolkit
  [pt-query-digest]=percona-toolkit
  [mariadb-dumpslow]=mariadb-server
)

# Debian packages without a program to look for: the Lua 5.1 C modules the tests load
# through --lua-cpath (tests/lua_e2e/test_cmodules.py), as MySQL Proxy users load them.
CHASSIS_DEBIAN_LIBRARIES=(lua-lpeg lua-filesystem lua-cjson)

# The interpreter the environments are made with: $CHASSIS_PYTHON, else the distribution's
# /usr/bin/python3 when it is 3.11 or later (what a fresh Debian machine runs, built with
# profile-guided and link-time optimisation: fewer instructions per query and per login
# than a plain source build such as pyenv's), else the python3 on PATH.
chassis_python() {
  if [ -n "${CHASSIS_PYTHON:-}" ]; then
    echo "$CHASSIS_PYTHON"
  elif [ -x /usr/bin/python3 ] &&
       /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo /usr/bin/python3
  else
    echo python3
  fi
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: $*; install them as root: apt-get install -y $*" >&2
    exit 1
  fi
  echo "== installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_debian_packages() {
  local missing=() prog
  for prog in "${!CHASSIS_DEBIAN_NEEDS[@]}"; do
    if ! command -v "$prog" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$prog" ]; then
      missing+=("${CHASSIS_DEBIAN_NEEDS[$prog]}")
    fi
  done
  local pkg
  for pkg in "${CHASSIS_DEBIAN_LIBRARIES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  # a C compiler and Python's headers: for mysqlclient, and for the relay's C module
  # (plugins/chassis_proxy/_relay.c), which the tests require to be built
  if ! command -v gcc >/dev/null 2>&1; then missing+=(build-essential); fi
  if ! [ -f "$("$(chassis_python)" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h" ]; then
    missing+=(python3-dev)
  fi
  # python3-venv
  if ! "$(chassis_python)" -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u) build-essential python3-dev
  fi
}

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $(chassis_python)"
    "$(chassis_python)" -m venv .venv
  fi
  local stamp=.venv/.chassis-installed
  local want
  want=$(cat pyproject.toml setup.py plugins/chassis_proxy/_relay.c tests/echo_plugin/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing chassis and its test extras into .venv (log: .venv/pip.log)"
    # an older checkout installed this project under the name "chassis" (an unrelated
    # PyPI project's name): remove it so that one distribution provides the command
    .venv/bin/python -m pip uninstall -y -q chassis >/dev/null 2>&1 || true
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e '.[test]' -e tests/echo_plugin; } >.venv/pip.log 2>&1; then
      tail -n 40 .venv/pip.log >&2
      echo "pip could not install the project; the whole log is in .venv/pip.log" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
}

# The demo's own environment: the project as a user installs it (pip install), without
# the test tools or the echo test plugin, so that its `chassis --help` is what a user
# sees. Inside .venv/ (ignored by git); DEMO_VENV overrides the place.
ensure_demo_venv() {
  local venv=${DEMO_VENV:-.venv/demo}
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the demo's environment $venv"
    "$(chassis_python)" -m venv "$venv"
  fi
  local stamp=$venv/.chassis-installed want
  want=$(cat pyproject.toml setup.py plugins/chassis_proxy/_relay.c | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing chassis into $venv (pip install -e .; log: $venv/pip.log)"
    if ! "$venv/bin/python" -m pip install -e . >"$venv/pip.log" 2>&1; then
      tail -n 40 "$venv/pip.log" >&2
      echo "pip could not install the project; the whole log is in $venv/pip.log" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
}
