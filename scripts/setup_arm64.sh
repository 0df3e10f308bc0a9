#!/usr/bin/env bash
# Sets up the ARM64 (aarch64) cross-build and emulation environment for native/.
#
# Everything lands under native/.arm64/ (git-ignored):
#   bin/qemu10-aarch64   qemu 10 user-mode emulator (static, from bookworm-backports)
#   bin/qemu7-aarch64    qemu 7.2 user-mode emulator (static, bookworm's own; its SME
#                        emulation is wrong, kept only to show that `-cpu max` there
#                        gives wrong INT8 answers, `-cpu max,sme=off` is right)
#   qemu10/, qemu7/      the extracted .deb packages (never installed system-wide)
#   executorch/          lib/, include/, share/ of the aarch64 executorch wheel, so that
#                        CMAKE_PREFIX_PATH=native/.arm64/executorch finds the CMake package
#   VERSIONS             what was obtained (package versions, qemu --version, wheel sha256)
#
# System changes (run as root the first time): installs g++-aarch64-linux-gnu via apt if
# aarch64-linux-gnu-g++ is missing, and adds the apt source file
# /etc/apt/sources.list.d/qdm-bookworm-backports.sources (bookworm-backports has
# apt priority 100, so nothing is ever upgraded from it implicitly).
#
# Network: only Debian's apt mirror and PyPI (through pip). Idempotent: steps already
# done are skipped, so a second run takes about a second.
#
# Then configure/build with:
#   cmake -S native -B native/build-arm64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE="$PWD/native/cmake/aarch64-linux-gnu.cmake" \
#     -DCMAKE_PREFIX_PATH="$PWD/native/.arm64/executorch"
# (a relative CMAKE_TOOLCHAIN_FILE is resolved against the build tree, then the source
# tree, never the current directory).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
ARM64_DIR="$REPO_ROOT/native/.arm64"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

EXECUTORCH_VERSION="1.5.1"
EXECUTORCH_WHEEL="executorch-${EXECUTORCH_VERSION}-cp311-cp311-manylinux_2_28_aarch64.whl"
EXECUTORCH_WHEEL_SHA256="8ee02348a3ea80ddf770822911ebf78da616b73afce0fbaaa79f23311c88c66a"

BACKPORTS_SOURCES="/etc/apt/sources.list.d/qdm-bookworm-backports.sources"
# In qemu >= 9.1 Debian packaging, `qemu-user` holds the static user-mode emulators
# (qemu-user-static is a transitional package depending on it); in bookworm's 7.2 they
# are in `qemu-user-static`.
QEMU10_PKG="qemu-user"
QEMU10_RELEASE="bookworm-backports"
QEMU7_PKG="qemu-user-static"
QEMU7_RELEASE="bookworm"

export DEBIAN_FRONTEND=noninteractive

step() { printf '[setup_arm64] %s\n' "$*"; }
die() { printf '[setup_arm64] ERROR: %s\n' "$*" >&2; exit 1; }

# Root is needed only for apt (a completed setup re-runs fine as any user).
need_root() {
  [[ "$(id -u)" == 0 ]] || die "run as root: $1"
}

mkdir -p "$ARM64_DIR/bin" "$ARM64_DIR/downloads"

APT_UPDATED=0
apt_update() {
  if [[ "$APT_UPDATED" == 0 ]]; then
    need_root "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

# --- a. cross compiler -------------------------------------------------------------
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  step "cross compiler: present ($(aarch64-linux-gnu-g++ -dumpfullversion))"
else
  step "cross compiler: installing g++-aarch64-linux-gnu via apt"
  apt_update
  apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu >/dev/null
  command -v aarch64-linux-gnu-g++ >/dev/null || die "aarch64-linux-gnu-g++ still missing after install"
fi

# --- helper: fetch one .deb (without installing it) and extract it -------------------
# usage: fetch_qemu <package> <release> <dest dir> <symlink name> <expected major>
fetch_qemu() {
  local pkg="$1" release="$2" dest="$3" link="$4" major="$5"
  local bin
  bin="$(find_qemu_bin "$dest")"
  if [[ -n "$bin" ]] && "$bin" --version 2>/dev/null | head -n1 | grep -q "version ${major}\."; then
    [[ "$(readlink "$ARM64_DIR/bin/$link" || true)" == "../${bin#$ARM64_DIR/}" ]] \
      || ln -sfn "../${bin#$ARM64_DIR/}" "$ARM64_DIR/bin/$link"
    step "qemu ${major}: present ($("$bin" --version | head -n1))"
    return
  fi
  step "qemu ${major}: apt-get download ${pkg}/${release} and extract into ${dest#$REPO_ROOT/}"
  apt_update
  local dl="$ARM64_DIR/downloads/$link"
  rm -rf "$dl" "$dest"
  mkdir -p "$dl" "$dest"
  # apt drops privileges to _apt for downloads; let it write here.
  chmod 777 "$dl"
  if ! (cd "$dl" && apt-get download "${pkg}/${release}") >"$dl.log" 2>&1; then
    cat "$dl.log" >&2
    die "apt-get download ${pkg}/${release} failed"
  fi
  rm -f "$dl.log"
  local deb
  deb="$(ls "$dl"/*.deb)"
  dpkg-deb -x "$deb" "$dest"
  dpkg-deb -f "$deb" Package Version >"$dest/.package"
  rm -rf "$dl"
  bin="$(find_qemu_bin "$dest")"
  [[ -n "$bin" ]] || die "no qemu-aarch64 binary in ${pkg}/${release}"
  # The package carries ~40 static emulators (~360 MB); keep only aarch64.
  find "$dest/usr/bin" -mindepth 1 -maxdepth 1 ! -name "$(basename "$bin")" -delete
  "$bin" --version | head -n1 | grep -q "version ${major}\." \
    || die "$bin is not qemu ${major}: $("$bin" --version | head -n1)"
  ln -sfn "../${bin#$ARM64_DIR/}" "$ARM64_DIR/bin/$link"
  step "qemu ${major}: got $("$bin" --version | head -n1)"
}

find_qemu_bin() {
  local d="$1" n
  for n in qemu-aarch64-static qemu-aarch64; do
    if [[ -x "$d/usr/bin/$n" ]]; then
      printf '%s\n' "$d/usr/bin/$n"
      return
    fi
  done
}

# --- b. qemu 10 from bookworm-backports ---------------------------------------------
if [[ ! -f "$BACKPORTS_SOURCES" ]]; then
  step "apt: adding bookworm-backports source $BACKPORTS_SOURCES"
  need_root "writing $BACKPORTS_SOURCES"
  cat >"$BACKPORTS_SOURCES" <<'EOF'
# Added by QuickDraw Mobile scripts/setup_arm64.sh: only to apt-get download qemu 10.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  APT_UPDATED=0
fi
fetch_qemu "$QEMU10_PKG" "$QEMU10_RELEASE" "$ARM64_DIR/qemu10" qemu10-aarch64 10

# --- c. qemu 7.2 from bookworm ------------------------------------------------------
fetch_qemu "$QEMU7_PKG" "$QEMU7_RELEASE" "$ARM64_DIR/qemu7" qemu7-aarch64 7

# --- d. executorch aarch64 wheel ----------------------------------------------------
ET_DIR="$ARM64_DIR/executorch"
WHEEL_PATH="$ARM64_DIR/downloads/$EXECUTORCH_WHEEL"
ET_STAMP="$ET_DIR/.wheel-sha256"
if [[ -f "$ET_DIR/share/cmake/executorch-config.cmake" && -f "$ET_STAMP" \
      && "$(cat "$ET_STAMP")" == "$EXECUTORCH_WHEEL_SHA256" ]]; then
  step "executorch ${EXECUTORCH_VERSION} aarch64: present in ${ET_DIR#$REPO_ROOT/}"
else
  [[ -x "$PYTHON" ]] || die "$PYTHON not found (create the project venv first, or set PYTHON=/path/to/python)"
  if [[ ! -f "$WHEEL_PATH" ]]; then
    step "executorch ${EXECUTORCH_VERSION} aarch64: pip download $EXECUTORCH_WHEEL"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
      --platform manylinux_2_28_aarch64 --python-version 3.11 \
      "executorch==${EXECUTORCH_VERSION}" -d "$ARM64_DIR/downloads" 2>&1 \
      | grep -v "is neither a file nor a directory" || true
    [[ -f "$WHEEL_PATH" ]] || die "pip download did not produce $WHEEL_PATH"
  fi
  actual="$(sha256sum "$WHEEL_PATH" | cut -d' ' -f1)"
  if [[ "$actual" != "$EXECUTORCH_WHEEL_SHA256" ]]; then
    rm -f "$WHEEL_PATH"
    die "sha256 mismatch for $EXECUTORCH_WHEEL: expected $EXECUTORCH_WHEEL_SHA256, got $actual (file removed; the pinned value in $0 is authoritative)"
  fi
  step "executorch ${EXECUTORCH_VERSION} aarch64: sha256 ok, extracting lib/ include/ share/"
  rm -rf "$ET_DIR" "$ARM64_DIR/downloads/unpack"
  "$PYTHON" - "$WHEEL_PATH" "$ARM64_DIR/downloads/unpack" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefixes = ("executorch/lib/", "executorch/include/", "executorch/share/")
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefixes)]
    z.extractall(dest, members)
EOF
  mv "$ARM64_DIR/downloads/unpack/executorch" "$ET_DIR"
  rm -rf "$ARM64_DIR/downloads/unpack"
  [[ -f "$ET_DIR/share/cmake/executorch-config.cmake" ]] || die "wheel has no share/cmake/executorch-config.cmake"
  printf '%s\n' "$EXECUTORCH_WHEEL_SHA256" >"$ET_STAMP"
fi

# --- record what we got -------------------------------------------------------------
write_versions() {
  echo "cross compiler: $(aarch64-linux-gnu-g++ --version | head -n1)"
  for v in 10 7; do
    echo "qemu${v}: $(tr '\n' ' ' <"$ARM64_DIR/qemu${v}/.package")-> $("$ARM64_DIR/bin/qemu${v}-aarch64" --version | head -n1)"
  done
  echo "executorch: $EXECUTORCH_WHEEL sha256 $EXECUTORCH_WHEEL_SHA256"
}
if [[ -w "$ARM64_DIR" ]]; then
  write_versions >"$ARM64_DIR/VERSIONS"
fi
sed 's/^/[setup_arm64] /' "$ARM64_DIR/VERSIONS"
step "done: toolchain file native/cmake/aarch64-linux-gnu.cmake, prefix ${ET_DIR#$REPO_ROOT/}"
