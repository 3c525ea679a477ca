#!/usr/bin/env bash
# The installed tree on its own: `cmake --install` into a DESTDIR, moved to another prefix, with the
# build tree and the source tree's include/ hidden (a tmpfs over each, in a private mount
# namespace), so nothing can come from them. The installed bulkheadd (its helpers found in
# libexec), the commented default bulkhead.toml and the CLI register and run a distribution with
# folder-share built out of tree twice: with pkg-config and with the CMake package, both against
# the installed header only. BULKHEAD_BUILD_DIR names the build tree to install from.
BUILD=${BULKHEAD_BUILD_DIR:?set BULKHEAD_BUILD_DIR to the build tree to install}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${BH_INSTALL_HIDDEN:-}" ] && [ "$(id -u)" -eq 0 ]; then
  exec unshare --mount --propagation private env BH_INSTALL_HIDDEN=1 "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

# Installed for /opt/bulkhead, then moved: it must not depend on where it was meant to be.
DESTDIR=$T/dest cmake --install "$BUILD" --prefix /opt/bulkhead >"$T/install.log" || fail "cmake --install failed"
mv "$T/dest/opt/bulkhead" "$T/moved"
P=$T/moved
for f in bin/bulkhead sbin/bulkheadd libexec/bulkhead/bulkhead-vminit libexec/bulkhead/bulkhead-pluginhost \
  libexec/bulkhead/bulkhead-unpack include/bulkhead/plugin_api.h etc/bulkhead/bulkhead.toml \
  lib/systemd/system/bulkhead.service lib/systemd/system/bulkhead.socket lib/tmpfiles.d/bulkhead.conf; do
  [ -f "$P/$f" ] || fail "cmake --install did not install $f"
done
for d in etc/bulkhead/plugins.d etc/bulkhead/trusted-keys; do
  [ -d "$P/$d" ] && [ -z "$(ls -A "$P/$d")" ] || fail "$d is not an empty directory"
done
PC_DIR=$(dirname "$(find "$P" -name bulkhead-plugin.pc)")
CMAKE_DIR=$(dirname "$(find "$P" -name BulkheadPluginConfig.cmake)")
[ -d "$PC_DIR" ] && [ -d "$CMAKE_DIR" ] || fail "no bulkhead-plugin.pc or BulkheadPluginConfig.cmake installed"

# What the test needs from the build tree, copied before it is hidden.
cp "$HELPER" "$T/bh-test-helper"; HELPER=$T/bh-test-helper
cp -a "$FIXTURES/rootfs" "$T/rootfs"; ROOTFS=$T/rootfs
mkdir -p "$T/plugin-src" && cp "$SRC/examples/plugins/folder-share.c" "$T/plugin-src/"
mount -t tmpfs -o ro,mode=0755 hidden-build-tree "$BUILD"
mount -t tmpfs -o ro,mode=0755 hidden-source-headers "$SRC/include"
[ ! -e "$BUILD/bin/bulkheadd" ] && [ ! -e "$SRC/include/bulkhead/plugin_api.h" ] || fail "cannot hide the build tree"
BIN=$P/bin
SBIN=$P/sbin

# folder-share, built with pkg-config and with find_package(BulkheadPlugin), each in its own
# directory with its folder-share.conf (what it shares, where).
mkdir -p "$T/plugins/pc" "$T/plugins/cmake" "$T/share" "$T/cfg/plugins.d"
echo "shared through an installed SDK" >"$T/share/README"
PKG_CONFIG_PATH=$PC_DIR cc -std=c99 -Wall -Wextra -Werror -O2 -fPIC -shared \
  $(PKG_CONFIG_PATH=$PC_DIR pkg-config --cflags bulkhead-plugin) \
  -o "$T/plugins/pc/folder-share.so" "$T/plugin-src/folder-share.c" || fail "the pkg-config build failed"
cat >"$T/plugin-src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(folder-share C)
find_package(BulkheadPlugin 0.1 REQUIRED)
bulkhead_add_plugin(folder-share folder-share.c)
target_compile_options(folder-share PRIVATE -Wall -Wextra -Werror)
CMAKE
cmake -S "$T/plugin-src" -B "$T/plugin-build" -DCMAKE_PREFIX_PATH="$P" >"$T/plugin-cmake.log" 2>&1 \
  && cmake --build "$T/plugin-build" >>"$T/plugin-cmake.log" 2>&1 || { cat "$T/plugin-cmake.log" >&2; fail "the CMake package build failed"; }
cp "$T/plugin-build/folder-share.so" "$T/plugins/cmake/"
for how in pc cmake; do
  printf 'folder=%s\nmountpoint=/mnt/%s\n' "$T/share" "$how" >"$T/plugins/$how/folder-share.conf"
  printf 'name = "share-%s"\npath = "%s"\n' "$how" "$T/plugins/$how/folder-share.so" >"$T/cfg/plugins.d/10-$how.toml"
  nm -D --defined-only "$T/plugins/$how/folder-share.so" | grep " bh_plugin_entry_v1\$" >/dev/null \
    || fail "the $how build does not export bh_plugin_entry_v1"
done
# The installed default configuration is what this service reads.
cp "$P/etc/bulkhead/bulkhead.toml" "$T/cfg/"

start_service
[ "$(readlink "/proc/$SVC_PID/exe")" = "$P/sbin/bulkheadd" ] || fail "the service is not the installed bulkheadd"
bh register busybox --rootfs "$ROOTFS" >/dev/null
# The installed bash completion offers the registered distribution (from `bulkhead list --json`).
source "$P/share/bash-completion/completions/bulkhead"
COMP_WORDS=("$BIN/bulkhead" --runtime-dir "$T/run" start ""); COMP_CWORD=4; COMPREPLY=()
_bulkhead
expect_eq "${COMPREPLY[*]}" busybox "the completion of a distribution name"
expect_eq "$(bh run -d busybox -- /bin/echo installed)" installed "a program in the registered distribution"
for how in pc cmake; do
  expect_eq "$(plugin_jq state "share-$how")" running "plugin share-$how"
  host=$(plugin_jq pid "share-$how")
  expect_eq "$(readlink "/proc/$host/exe")" "$P/libexec/bulkhead/bulkhead-pluginhost" "the host of share-$how"
  out=$(bh vm exec -- /bin/cat "/mnt/$how/README")
  expect_eq "$out" "shared through an installed SDK" "the folder share-$how mounted into the VM"
done
stop_service
echo "PASS: the installed tree (moved to $P) runs a distribution and two out-of-tree plugins"
