# bulkhead-oci: the image and container steps of a container session, run by the service inside
# the session's VM (as its root, that is as the session's user) with `sh -c`; the service embeds
# this file (container-images.cpp). The tools are Debian's: skopeo moves images, umoci unpacks
# them, crun runs containers. Their errors go to stderr verbatim; the service reads stdout only
# where a verb prints something, as hostile input.
#
# The store, in the session's storage (/storage in the VM):
#   images/HEX/oci       one OCI image layout per image id (sha256:HEX), its only tag "img"
#   images/HEX/bundle    the image unpacked (bundle/rootfs), made on first use
#   images/HEX/line      its manifest and config as the service read them, for the index
#   containers/ID/       a container: rootfs (overlay on the image, or a copy), config.json
#   tmp/                 staging: a load or pull is moved into images/ only once complete and
#                        accepted by the service (keep), or removed (discard)
#   index                what the service reads back when a session is made again on this
#                        storage (index-save): the images' manifests and configs, the references
# crun's state lives in the VM's /tmp: it dies with the VM, as the containers do.
set -eu
store=/storage
crun_root=/tmp/crun
export TMPDIR="$store/tmp"
[ -d "$TMPDIR" ] || mkdir -p "$store/images" "$store/containers" "$TMPDIR"

# enter_cgroup ID [create]: moves this shell (and so what it execs) into the container's own
# cgroup, below the VM's. The service delegates a container session VM's cgroup to its root; where
# it could not (no cgroup2 directory for VMs), containers share the VM's.
cgroups=/sys/fs/cgroup
enter_cgroup() {
  [ -w "$cgroups/cgroup.procs" ] || return 0
  if [ "${2:-}" = create ]; then
    [ -d "$cgroups/$1" ] || mkdir "$cgroups/$1" || { echo "cannot make the cgroup of container $1" >&2; exit 1; }
  fi
  [ -d "$cgroups/$1" ] || return 0
  echo $$ >"$cgroups/$1/cgroup.procs"
}

# blobs_of DIR: sets blobs, manifest and config (hex digests) for the image layout in DIR/oci. They
# are read from the layout's files: two `skopeo inspect` runs cost more than the rest of a small
# load. skopeo and umoci write the layout's index, and the manifests they make, as compact JSON;
# a manifest pulled as it was may be indented, and jq reads that one.
blobs_of() {
  blobs="$1/oci/blobs/sha256"
  manifest=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]\{64\}\)".*/\1/p' "$1/oci/index.json")
  [ -n "$manifest" ] || { echo "cannot find the manifest of the image in $1" >&2 && return 1; }
  config=$(sed -n 's/.*"config":{[^}]*"digest":"sha256:\([0-9a-f]\{64\}\)".*/\1/p' "$blobs/$manifest")
  [ -n "$config" ] || config=$(jq -r '.config.digest' "$blobs/$manifest" | sed -n 's/^sha256:\([0-9a-f]\{64\}\)$/\1/p')
  [ -n "$config" ] || { echo "the manifest of the image in $1 names no sha256 config" >&2 && return 1; }
}

# describe DIR TAG: the line the service reads for the image staged in DIR/oci; DIR/line keeps it
# without the tag, for the store's index.
describe() {
  blobs_of "$1" || exit 1
  jq -c -n --arg tag "$2" --slurpfile m "$blobs/$manifest" --slurpfile c "$blobs/$config" \
    '{tag: "", manifest: $m[0], config: $c[0]} | ., .tag = $tag' >"$1/lines"
  head -n 1 "$1/lines" >"$1/line"
  tail -n 1 "$1/lines" >>"$stage/out"
  rm "$1/lines"
}

# unpacked HEX: the image unpacked once, as images/HEX/bundle.
unpacked() {
  image="$store/images/$1"
  [ -d "$image/oci" ] || { echo "image sha256:$1 is gone from the store" >&2 && exit 1; }
  [ ! -d "$image/bundle" ] || return 0
  rm -rf "$image/unpack"
  mkdir "$image/unpack"
  umoci raw unpack --rootless --image "$image/oci:img" "$image/unpack/rootfs" >&2
  mv "$image/unpack" "$image/bundle"
}

# overlay HEX DIR: the container in DIR gets its overlay on the unpacked image at DIR/rootfs.
overlay() {
  mount -t overlay overlay -o "lowerdir=$store/images/$1/bundle/rootfs,upperdir=$2/upper,workdir=$2/work" "$2/rootfs"
}

# staged: prints the lines of the images staged in $stage, then the stage's name; the stage
# stays for the service's verdict (keep or discard). Only reached once every image was staged.
staged() {
  cat "$stage/out"
  printf '{"stage":"%s"}\n' "$(basename "$stage")"
  trap - EXIT
}

verb=${1:?verb}
shift
case "$verb" in
load)
  # stdin: a docker-archive. Prints one JSON line per image: tag ("" when it has none), the
  # manifest and the config. Nothing reaches images/ unless every image of the archive loaded.
  stage=$(mktemp -d "$TMPDIR/load.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  # Its tags, one a line, from skopeo's indented JSON (a reference has no quotes).
  skopeo --insecure-policy list-tags docker-archive:/dev/stdin >"$stage/tags.json"
  sed -n '/"Tags"/,/]/s/^ *"\([^"]*\)",\{0,1\}$/\1/p' "$stage/tags.json" >"$stage/tags"
  [ -s "$stage/tags" ] || echo >"$stage/tags"
  n=0
  while IFS= read -r tag <&4; do
    n=$((n + 1))
    src=docker-archive:/dev/stdin
    [ -z "$tag" ] || src="$src:$tag"
    mkdir "$stage/$n"
    skopeo --insecure-policy copy --quiet "$src" "oci:$stage/$n/oci:img" >&2
    describe "$stage/$n" "$tag"
  done 4<"$stage/tags" # stdin stays the archive
  staged
  ;;
import)
  # import REF: stdin a tar of a root filesystem (plain, or compressed with gzip, xz or zstd).
  # Stages a one-layer image tagged REF, printed as load prints it.
  stage=$(mktemp -d "$TMPDIR/load.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir "$stage/1"
  umoci init --layout "$stage/1/oci" >&2
  umoci new --image "$stage/1/oci:img" >&2
  magic=$(head -c 6 /dev/stdin | od -An -tx1 | tr -d ' \n')
  case "$magic" in
  1f8b*) unpack="gzip -dc" ;;
  fd377a585a00) unpack="xz -dc" ;;
  28b52ffd*) unpack="zstd -dcq" ;;
  *) unpack=cat ;;
  esac
  command -v "${unpack%% *}" >/dev/null || { echo "${unpack%% *} is not installed: cannot decompress the archive" >&2; exit 1; }
  # Two passes, each reopening stdin (a regular file) from its start: tar checks the archive
  # (umoci adds a layer verbatim), then umoci adds it. dash has no pipefail: a failed
  # decompression leaves a mark.
  tar_failed=
  { $unpack </dev/stdin 2>"$stage/unpack-errors" || : >"$stage/unpack-failed"; } |
    tar -t >/dev/null 2>"$stage/tar-errors" || tar_failed=1
  [ ! -e "$stage/unpack-failed" ] ||
    { echo "cannot decompress the archive: $(tail -n 1 "$stage/unpack-errors")" >&2; exit 1; }
  [ -z "$tar_failed" ] || { echo "the archive is not a valid tar: $(tail -n 1 "$stage/tar-errors")" >&2; exit 1; }
  $unpack </dev/stdin | umoci raw add-layer --image "$stage/1/oci:img" \
    --history.created_by "bulkhead container image import" /dev/stdin >&2
  describe "$stage/1" "$1"
  staged
  ;;
pull)
  # pull REF TLS-VERIFY: one image from a registry, printed as load prints it.
  stage=$(mktemp -d "$TMPDIR/pull.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir "$stage/1"
  skopeo --insecure-policy copy --quiet --src-tls-verify="$2" "docker://$1" "oci:$stage/1/oci:img" >&2
  describe "$stage/1" "$1"
  staged
  ;;
keep)
  # keep STAGE HEX...: the service accepted what a load or pull staged, the images it described
  # in order, by id: they move into images/ (an id already there stays as it was).
  stage="$TMPDIR/$1"
  shift
  i=0
  for hex in "$@"; do
    i=$((i + 1))
    case "$hex" in *[!0-9a-f]* | "") echo "invalid image id '$hex'" >&2 && exit 1 ;; esac
    [ -d "$store/images/$hex" ] || mv "$stage/$i" "$store/images/$hex"
  done
  rm -rf "$stage"
  ;;
index-save)
  # stdin: the service's references, one JSON line. Writes the store's index, which the service
  # reads back when a session is made again on this storage: that line first, then a line per
  # image of the store as load printed it (without its tag; describe kept it).
  refs=$(head -c 4194304)
  set --
  for dir in "$store"/images/*/; do
    [ -f "$dir/line" ] && set -- "$@" "$dir/line"
  done
  index=$(mktemp "$TMPDIR/index.XXXXXX")
  printf '%s\n' "$refs" >"$index"
  [ $# -eq 0 ] || cat "$@" >>"$index"
  mv "$index" "$store/index"
  ;;
discard)
  rm -rf "${TMPDIR:?}/$1"
  ;;
push)
  # push HEX REF TLS-VERIFY
  exec skopeo --insecure-policy copy --quiet --dest-tls-verify="$3" "oci:$store/images/$1/oci:img" "docker://$2" >&2
  ;;
exec)
  # exec ID PROGRAM [ARGS...]: in the running container, with this process's stdio.
  id=$1
  shift
  enter_cgroup "$id"
  exec crun --root "$crun_root" exec "$id" "$@"
  ;;
exec-tty)
  # exec-tty ID ROWS COLUMNS PROGRAM [ARGS...]: the same with a console of its own, handed over
  # the agent's console socket (the service relays it to the client); this process's stdio get
  # crun's errors. The console has its size from the start (the container's process, with these
  # arguments and that size, is crun's --process): sized later, a program could see 0 by 0.
  id=$1 rows=$2 columns=$3
  shift 3
  enter_cgroup "$id"
  process=$(jq -c --argjson rows "$rows" --argjson columns "$columns" \
    '.process | .terminal = true | .consoleSize = {height: $rows, width: $columns} | .args = $ARGS.positional' \
    "$store/containers/$id/config.json" --args -- "$@")
  exec crun --root "$crun_root" exec --process /proc/self/fd/3 --console-socket "$BULKHEAD_CONSOLE_SOCKET" \
    "$id" 3<<EOF
$process
EOF
  ;;
logs)
  # logs ID [follow]: the log of a detached container; with "follow", then what it writes until
  # its process ends.
  log="$store/containers/$1/log"
  [ -e "$log" ] || exit 3
  if [ "${2:-}" = follow ]; then
    pid=$(crun --root "$crun_root" state "$1" 2>/dev/null | jq -r 'select(.status == "running") | .pid') || pid=
    [ -z "$pid" ] || exec tail -n +1 -f --pid="$pid" "$log"
  fi
  exec cat "$log"
  ;;
create)
  # create ID HEX; stdin: the container's config.json. Unpacks the image once, then gives the
  # container an overlay of it (a copy where overlay cannot be mounted) and a fifo its poststart
  # hook writes to once the process started.
  id=$1 hex=$2
  unpacked "$hex"
  dir="$store/containers/$id"
  # Its cgroup too (one mkdir for all), when the VM's cgroup is delegated: enter_cgroup.
  cgroup=
  [ ! -w "$cgroups/cgroup.procs" ] || cgroup="$cgroups/$id"
  mkdir "$dir" "$dir/upper" "$dir/work" "$dir/rootfs" $cgroup
  overlay "$hex" "$dir" 2>/dev/null || cp -a "$store/images/$hex/bundle/rootfs/." "$dir/rootfs/"
  cat >"$dir/config.json"
  mkfifo "$dir/started"
  ;;
prepare)
  # prepare ID HEX: a container that exited (or was created in an earlier VM) made ready to start
  # again with its files as it left them: its overlay mounted again where an earlier VM had it
  # (an empty rootfs; a copy is still there), its poststart hook's flag gone.
  id=$1 hex=$2
  dir="$store/containers/$id"
  [ -f "$dir/config.json" ] || { echo "the files of container $id are gone from the store" >&2 && exit 1; }
  unpacked "$hex"
  [ -n "$(ls -A "$dir/rootfs")" ] || overlay "$hex" "$dir"
  rm -f "$dir/started.flag"
  ;;
run)
  # run ID [log|tty]: the container's process, under crun, in a cgroup of its own; with "log", its
  # output goes to the container's log file (a detached container); with "tty" (its config asks
  # for a terminal), crun hands its console over the agent's console socket.
  [ "${2:-}" != log ] || exec >>"$store/containers/$1/log" 2>&1 </dev/null
  enter_cgroup "$1" create
  if [ "${2:-}" = tty ]; then
    exec crun --root "$crun_root" --cgroup-manager=disabled run --console-socket "$BULKHEAD_CONSOLE_SOCKET" \
      --bundle "$store/containers/$1" "$1"
  fi
  exec crun --root "$crun_root" --cgroup-manager=disabled run --bundle "$store/containers/$1" "$1"
  ;;
started)
  # Returns once the poststart hook wrote its line. The fifo is opened read-write, so the hook's
  # open never waits for this side, and its line stays in the pipe until read.
  exec 3<>"$store/containers/$1/started"
  read -r line <&3
  ;;
has-started)
  # For a container that already ended: did its poststart hook run?
  [ -e "$store/containers/$1/started.flag" ]
  ;;
kill)
  exec crun --root "$crun_root" kill "$1" "$2"
  ;;
delete)
  dir="$store/containers/$1"
  # crun run removes its state when the process ended: a crun delete costs as much as the rest.
  [ ! -e "$crun_root/$1" ] || crun --root "$crun_root" delete --force "$1" 2>/dev/null || true
  cgroup="$cgroups/$1"
  if [ -d "$cgroup" ]; then
    echo 1 >"$cgroup/cgroup.kill" 2>/dev/null || true
    for below in "$cgroup"/*/; do # what the container made below it (at most one level: max.depth)
      [ ! -d "$below" ] || rmdir "$below" 2>/dev/null || true
    done
    i=0 # its last processes leave it a moment after the kill
    while ! rmdir "$cgroup" 2>/dev/null && [ -d "$cgroup" ] && [ "$i" -lt 50 ]; do
      i=$((i + 1))
      sleep 0.1
    done
  fi
  umount "$dir/rootfs" 2>/dev/null || true
  rm -rf "$dir"
  ;;
rmi)
  rm -rf "$store/images/$1"
  ;;
*)
  echo "bulkhead-oci: unknown verb '$verb'" >&2
  exit 2
  ;;
esac
