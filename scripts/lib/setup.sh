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
)

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
  # python3-venv and headers for building mysqlclient
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2046
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u) build-essential python3-dev
  fi
}

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  local stamp=.venv/.chassis-installed
  local want
  want=$(cat pyproject.toml tests/echo_plugin/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== installing chassis and its test extras into .venv (log: .venv/pip.log)"
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e '.[test]' -e tests/echo_plugin; } >.venv/pip.log 2>&1; then
      tail -n 40 .venv/pip.log >&2
      echo "pip could not install the project; the whole log is in .venv/pip.log" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
}
