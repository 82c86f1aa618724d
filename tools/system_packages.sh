#!/usr/bin/env bash
# Debian packages the tests need beside the venv: Chromium + its driver (the HTML report is opened in a
# real browser) and dicom3tools (dciodvfy checks the DICOM Segmentation and SR). Installs only what is
# missing; `apt-get update` once, then `apt-get install -y`. Without root (and sudo) it says what to
# install and the tests that need these tools skip with that reason.
set -euo pipefail
declare -A needs=([chromium]=chromium [chromedriver]=chromium-driver [dciodvfy]=dicom3tools)
missing=()
for tool in "${!needs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "note: install the Debian packages ${missing[*]} for the report and DICOM tests (they skip without them)" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
