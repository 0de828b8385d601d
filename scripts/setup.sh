#!/usr/bin/env bash
# Prepare a machine for eugen-nerf: system library for open3d, .venv, editable install with test extras.
# Idempotent: a second run only checks and returns in a few seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
stamp=".venv/.eugen-installed"

# open3d 0.20 loads libusb-1.0 at import time; Debian ships it as libusb-1.0-0.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    echo "[setup] installing system library libusb-1.0-0 (needed by open3d)"
    sudo_cmd=""
    if [ "$(id -u)" != "0" ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3 -m venv .venv
fi

# Re-install only when the package metadata changed since the last successful install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing eugen-nerf and its dependencies (from scratch: several minutes, ~8 GB)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi

# ns-render looks for an `ffmpeg` on PATH (even for PNG frames). The imageio-ffmpeg wheel ships a
# static ffmpeg; link it into .venv/bin, which is on PATH in an activated venv and for scripts/*.sh.
if [ ! -x .venv/bin/ffmpeg ]; then
    ln -sf "$(.venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" .venv/bin/ffmpeg
fi
