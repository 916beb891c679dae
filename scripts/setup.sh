#!/usr/bin/env bash
# One set-up command for a fresh Debian machine with Python 3.11:
#   bash scripts/setup.sh
# System libraries (Open3D needs libusb; bpy/Workbench need EGL), then torch + torchvision
# (the PyPI pair runs on CPU and CUDA; segment-anything needs torchvision), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null; then
  pkgs="libusb-1.0-0 libegl1 libgl1 libxrender1 libxi6 libxkbcommon0 libsm6"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi
"$PY" -m pip install -q --disable-pip-version-check "torch==2.14.0" "torchvision==0.29.0"
"$PY" -m pip install -q --disable-pip-version-check -e ".[all,dev]"
"$PY" -c "import bpy, torch, torchvision, open3d, higra, zmq, segment_anything; print('setup ok: bpy', bpy.app.version_string, '| torch', torch.__version__)"
