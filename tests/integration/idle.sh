#!/usr/bin/env bash
# The idle timeout tears the VM down; a user's settings apply within the admin policy.
source "$(dirname "$0")/lib.sh"
printf '[vm]\nidle_timeout_s = 1\n[policy]\nallow_user_host_network = false\n' > "$T/cfg/bulkhead.toml"
start_service
bh register idle --rootfs "$ROOTFS" >/dev/null
bh run -- true
expect_eq "$(status_field '.sessions[0].vm_running')" "true" "VM running right after run"
vm_stopped() { [ "$(status_field '.sessions[0].vm_running')" = "false" ]; }
DEADLINE=15 eventually vm_stopped

# The user asks for the host network, the policy forbids it: flag 0, private network.
mkdir -p "$T/home/.config/bulkhead"
printf '[vm]\nhost_network = true\nidle_timeout_s = 0\n' > "$T/home/.config/bulkhead/bulkhead.toml"
bh run -- true
expect_eq "$(status_field '.sessions[0].custom_config_flags')" "0" "forbidden override ignored"
expect_eq "$(status_field '.sessions[0].idle_timeout_s')" "0" "allowed override applied"
printf '[vm]\nhost_network = "yes"\n' > "$T/home/.config/bulkhead/bulkhead.toml"
expect_error EINVAL "host_network" bh run -- true
echo "idle: ok"
