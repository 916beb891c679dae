#!/usr/bin/env bash
# One set-up command, as root or as a user, on a stock Debian 12/13 or Ubuntu 24.04:
#   bash scripts/setup.sh                  # -> .venv (the project, its tools and Blender as the bpy module)
#   bash scripts/setup.sh --other-blender  # also .venv-other-blender: the other Blender for the add-on tests
#
# 1. System libraries Open3D and Blender need (libusb, EGL/GL, X11 bits) when missing (apt-get, via sudo
#    when not root).
# 2. A Python that a Blender release embeds: 3.13 (Blender 5.1 to 5.3: bpy==5.3.0, the default) or 3.11
#    (Blender 4.2 to 5.0: bpy==5.0.1). In order: $PYTHON, python3.13, a pyenv 3.13, python3.11, a pyenv
#    3.11, else `uv python install 3.13` (uv from PyPI). Without any, it says what to install.
# 3. The project's virtual environment .venv (python3-venv is installed when the system Python lacks
#    it), torch + torchvision (the PyPI pair: CPU and CUDA; segment-anything needs torchvision), then this
#    project with all extras. Afterwards: .venv/bin/backend demo, .venv/bin/python -m pytest -q.
# --other-blender: .venv-other-blender holds only the other Blender: the oldest supported one, bpy 4.2 LTS
#    with the numpy 1.26 it ships, on Python 3.11 beside a 3.13 project (or bpy 5.3.0 on 3.13 beside a 3.11
#    one), and pytest; tests/blender_addon/test_build.py installs the built add-on in it and runs Segment Scene
#    there too, test_other_blender.py its release-dependent tests. CI uses it; it fails without that Python.
set -euo pipefail
cd "$(dirname "$0")/.."

OTHER=0
for arg in "$@"; do
  case "$arg" in
    --other-blender) OTHER=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --other-blender or --help)" >&2; exit 2 ;;
  esac
done

TORCH="torch==2.14.1"; TORCHVISION="torchvision==0.29.1"
declare -A BPY=([3.13]="bpy==5.3.0" [3.11]="bpy==5.0.1")
# the other Blender for the add-on tests: the newest (5.3) beside a 3.11 project, the oldest supported (4.2 LTS,
# with the numpy its release ships) beside a 3.13 one
declare -A OTHER_BPY=([3.13]="bpy==5.3.0" [3.11]="bpy==4.2.23 numpy==1.26.4")
OTHER_TEST_TOOLS="pytest>=8 pytest-timeout>=2.3"  # tests/blender_addon/test_other_blender.py runs tests there
PIP_FLAGS=(-q --disable-pip-version-check)
say() { echo "setup: $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="__none__"; fi
fi

apt_install() {  # apt_install PKG...: install the missing ones (quietly), or say what to install
  command -v apt-get >/dev/null || return 0
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$SUDO" = "__none__" ]; then
    say "please install (as root): apt-get install ${missing[*]}"; exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

find_python() {  # find_python 3.13|3.11: prints the path of such a Python, or nothing
  local want=$1 c
  local root=${PYENV_ROOT:-$HOME/.pyenv}
  for c in "python$want" $(ls -d "$root"/versions/"$want".*/bin/python"$want" 2>/dev/null | sort -V -r) \
           "$HOME/.local/bin/python$want"; do
    c=$(command -v "$c" 2>/dev/null) || continue
    [ "$(py_version "$c")" = "$want" ] && { echo "$c"; return 0; }
  done
  if command -v uv >/dev/null; then uv python find "$want" 2>/dev/null && return 0; fi
  return 0
}

uv_python() {  # uv_python 3.13: fetch a standalone CPython with uv (uv itself from PyPI); prints its path
  local want=$1 boot=.venv-bootstrap-uv uv
  uv=$(command -v uv || true)
  if [ -z "$uv" ]; then
    local base; base=$(command -v python3 || true)
    [ -n "$base" ] || return 0
    "$base" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    "$base" -m venv "$boot" >/dev/null 2>&1 && "$boot/bin/pip" install "${PIP_FLAGS[@]}" uv >/dev/null 2>&1 || return 0
    uv="$boot/bin/uv"
  fi
  say "no Python $want found; fetching one with uv (uv python install $want)"
  timeout 600 "$uv" python install "$want" >/dev/null 2>&1 || { rm -rf "$boot"; return 0; }
  "$uv" python find "$want" 2>/dev/null || true
  rm -rf "$boot"
}

make_venv() {  # make_venv DIR PYTHON: a venv of that Python at DIR (recreated if its Python differs)
  local dir=$1 py=$2 want
  want=$(py_version "$py")
  if [ -x "$dir/bin/python" ] && [ "$(py_version "$dir/bin/python")" = "$want" ]; then return 0; fi
  if [ -e "$dir" ]; then say "replacing $dir (it is not a Python $want environment)"; rm -rf "$dir"; fi
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian/Ubuntu split venv out of the system Python
    case "$py" in /usr/bin/*|/bin/*) apt_install "python$want-venv" ;; esac
  fi
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install "${PIP_FLAGS[@]}" --upgrade pip >/dev/null
}

# 1. system libraries
apt_install libusb-1.0-0 libegl1 libgl1 libxrender1 libxi6 libxkbcommon0 libsm6

# 2. a Python with a Blender
PY=${PYTHON:-}
if [ -n "$PY" ]; then
  PY=$(command -v "$PY") || { say "PYTHON=$PYTHON is not a program"; exit 1; }
  case "$(py_version "$PY")" in 3.13|3.11) ;; *)
    say "PYTHON=$PY is Python $(py_version "$PY"); bpy (Blender) exists for 3.13 (bpy 5.3) and 3.11 (bpy 5.0) only"
    exit 1 ;;
  esac
else
  PY=$(find_python 3.13)
  [ -n "$PY" ] || PY=$(find_python 3.11)
  [ -n "$PY" ] || PY=$(uv_python 3.13)
fi
if [ -z "$PY" ]; then
  cat >&2 <<'EOF'
setup: no Python 3.13 or 3.11 here. Blender as a Python module (bpy) exists only for the Python a Blender
release embeds: 3.13 (Blender 5.1-5.3, recommended) or 3.11 (Blender 4.2-5.0). Install one, then rerun:
  Debian 13:     apt-get install python3 python3-venv          (its python3 is 3.13)
  Debian 12:     apt-get install python3 python3-venv          (its python3 is 3.11)
  Ubuntu 24.04:  pipx install uv && uv python install 3.13     (or: pyenv install 3.13)
or point the script at one: PYTHON=/path/to/python3.13 bash scripts/setup.sh
EOF
  exit 1
fi
VER=$(py_version "$PY")
[ "$VER" = "3.13" ] || say "using Python $VER (Blender 5.0 as bpy); Python 3.13 gives the current Blender 5.3"
say "Python $VER: $PY"

# 3. the project environment
make_venv .venv "$PY"
.venv/bin/python -m pip install "${PIP_FLAGS[@]}" "$TORCH" "$TORCHVISION"
.venv/bin/python -m pip install "${PIP_FLAGS[@]}" -e ".[all,dev]"
.venv/bin/python -c "import bpy, torch, torchvision, open3d, higra, zmq, segment_anything, numpy; print('setup ok: .venv', \
'| Python %d.%d' % __import__('sys').version_info[:2], '| bpy', bpy.app.version_string, '| numpy', numpy.__version__, \
'| torch', torch.__version__)"

# --other-blender: the other Blender for the add-on tests
if [ "$OTHER" -eq 1 ]; then
  OTHER_VER=$([ "$VER" = "3.13" ] && echo 3.11 || echo 3.13)
  OPY=$(find_python "$OTHER_VER")
  [ -n "$OPY" ] || OPY=$(uv_python "$OTHER_VER")
  if [ -z "$OPY" ]; then
    say "--other-blender needs Python $OTHER_VER (for ${OTHER_BPY[$OTHER_VER]}); install it (pyenv install $OTHER_VER," \
        "uv python install $OTHER_VER, or apt-get install python$OTHER_VER python$OTHER_VER-venv) and rerun"
    exit 1
  fi
  make_venv .venv-other-blender "$OPY"
  # shellcheck disable=SC2086  # the entry is "bpy==X [numpy==Y]": one argument per requirement
  .venv-other-blender/bin/python -m pip install "${PIP_FLAGS[@]}" ${OTHER_BPY[$OTHER_VER]} $OTHER_TEST_TOOLS
  .venv-other-blender/bin/python -c "import bpy, numpy, sys; print('setup ok: .venv-other-blender | Python %d.%d' % \
sys.version_info[:2], '| bpy', bpy.app.version_string, '| numpy', numpy.__version__)"
fi
