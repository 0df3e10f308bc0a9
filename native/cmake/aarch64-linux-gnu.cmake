# CMake toolchain file: cross-compile native/ for 64-bit ARM Linux (aarch64) with
# Debian's GNU cross compiler, and run the results (tests, try_run, custom commands
# that name a target) under qemu's user-mode emulator.
#
# Prerequisites: scripts/setup_arm64.sh (as root) installs g++-aarch64-linux-gnu and
# puts qemu 10 and the aarch64 ExecuTorch package under native/.arm64/.
#
#   cmake -S native -B native/build-arm64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE="$PWD/native/cmake/aarch64-linux-gnu.cmake" \
#     -DCMAKE_PREFIX_PATH="$PWD/native/.arm64/executorch"
#   cmake --build native/build-arm64
#   ctest --test-dir native/build-arm64        # runs under qemu
#
# Pass the toolchain file as an absolute path: a relative one is looked up in the
# build tree, then the source tree, not in the current directory.
#
# Cache variables:
#   QDM_QEMU       the qemu-aarch64 binary (default native/.arm64/bin/qemu10-aarch64)
#   QDM_QEMU_CPU   the emulated CPU passed as `-cpu` (default max; e.g. cortex-a55,
#                  cortex-a76, neoverse-v1, "max,sme=off"). Empty: no -cpu option, so
#                  the QEMU_CPU environment variable (or qemu's default) decides.
#   QDM_AARCH64_SYSROOT  the target's libraries, /usr/aarch64-linux-gnu; passed to
#                  qemu as -L so no QEMU_LD_PREFIX is needed.
#
# Do not use bookworm's qemu 7.2 with -cpu max: its SME emulation is wrong and the
# INT8 (XNNPACK) kernels give wrong answers there (`max,sme=off` is right).
#
# Floating point: GCC contracts a*b+c into a fused multiply-add on aarch64 by
# default (-ffp-contract=fast), which changes float results against x86-64.
# native/CMakeLists.txt compiles everything with -ffp-contract=off for
# byte-identical results; this file deliberately does not set compile flags.
# That covers only code compiled here: ExecuTorch's prebuilt XNNPACK FP32 kernels
# pick their kernels by CPU. Measured on 208 sample drawings, their FP32 logits match
# x86-64 byte for byte only on `-cpu max` (the SME kernels) and differ by up to 2.4e-6
# (same argmax) on cortex-a55/a76/neoverse-v1 and max,sme=off. INT8 logits match x86-64
# byte for byte on every one of these profiles.

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(QDM_AARCH64_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${QDM_AARCH64_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${QDM_AARCH64_TRIPLE}-g++)

set(QDM_AARCH64_SYSROOT
    "/usr/${QDM_AARCH64_TRIPLE}"
    CACHE PATH "Target libraries for the aarch64 cross build (qemu -L prefix)")

# native/.arm64, next to this file's folder (native/cmake).
get_filename_component(_qdm_arm64_dir "${CMAKE_CURRENT_LIST_DIR}/../.arm64"
                       ABSOLUTE)

# Libraries and headers only from the target root; programs from the host.
# Packages too, but every CMAKE_PREFIX_PATH entry (e.g. native/.arm64/executorch) and
# native/.arm64 itself are roots as well: a path that already lies under a root is
# searched as it is, whereas with mode ONLY and no such root CMake would look for
# /usr/aarch64-linux-gnu/<prefix> and find_package(executorch CONFIG) would fail.
# (Mode BOTH would also work but could pick up x86-64 packages from /usr/lib/cmake.)
set(CMAKE_FIND_ROOT_PATH "${QDM_AARCH64_SYSROOT}" "${_qdm_arm64_dir}")
foreach(_qdm_prefix IN LISTS CMAKE_PREFIX_PATH)
  list(APPEND CMAKE_FIND_ROOT_PATH "${_qdm_prefix}")
endforeach()
unset(_qdm_prefix)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(QDM_QEMU
    "${_qdm_arm64_dir}/bin/qemu10-aarch64"
    CACHE FILEPATH "qemu-aarch64 user-mode emulator used to run aarch64 binaries")
set(QDM_QEMU_CPU
    "max"
    CACHE STRING "CPU model qemu emulates (-cpu); empty to leave it to QEMU_CPU")

set(CMAKE_CROSSCOMPILING_EMULATOR "${QDM_QEMU}")
if(NOT QDM_QEMU_CPU STREQUAL "")
  list(APPEND CMAKE_CROSSCOMPILING_EMULATOR -cpu "${QDM_QEMU_CPU}")
endif()
list(APPEND CMAKE_CROSSCOMPILING_EMULATOR -L "${QDM_AARCH64_SYSROOT}")

if(NOT EXISTS "${QDM_QEMU}")
  message(WARNING "QDM_QEMU=${QDM_QEMU} does not exist: aarch64 binaries cannot "
                  "run here (run scripts/setup_arm64.sh as root)")
endif()
unset(_qdm_arm64_dir)
