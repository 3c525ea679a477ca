// The host template: one bulkhead-pluginhost, exec'd and relocated once, that forks every plugin
// host, as Chromium's and Android's zygotes fork renderers and apps.
//
// An exec'd host pays, before any plugin code, its exec, the dynamic loader's relocation of
// libstdc++ and its own start-up: most of an activation's CPU (bench/README.md). A host forked
// from the template starts with all of that done and shares the template's relocated pages
// copy-on-write, so it is ready sooner and costs less memory. The price: every host of one
// template has the template's address layout (ASLR) and stack canary. Hosts run as root with
// their plugins, and root can read any host's memory anyway; the service is exec'd on its own and
// shares nothing with them.
//
// The protocol, on a SOCK_SEQPACKET socketpair the service made (the template's fd 3):
// - request: one packet whose bytes are a flag ('C': core dumps allowed, '-': not) followed by
//   the plugin's name (at most max_template_name bytes), carrying exactly host_template_fds fds
//   in the host's order: stdin, stdout and stderr, the service channel, the cgroup, the hook lane
//   and the call registry (fds 0, 1 and 2, then 3 to 6 of an exec'd host; stdout is stderr);
// - answer: 4 bytes, the new host's pid or a negative errno, with its pidfd on success.
// The template forks with clone3(CLONE_PARENT | CLONE_INTO_CGROUP | CLONE_PIDFD): the host is the
// service's child, born in its own cgroup, exactly as an exec'd host is. The template itself runs
// no plugin code, ever, and stays single-threaded so that forking it is safe.
#pragma once

#include <kj/array.h>
#include <string>
#include <vector>

namespace bh::host {

inline constexpr unsigned host_template_fds = 6;
inline constexpr size_t max_template_name = 255;

// What a forked host runs, with its fds in place (as host_main of src/host/main.cpp).
using HostMain = void (*)(const std::string& name, bool core_dumps);

// The template's main loop: answers each request of the service on fd 3 until the service closes
// it (or dies: the template has its parent-death signal). Never returns. `arguments`: the
// template's own argv strings, where a forked host writes its command line (the service starts
// the template with room for the longest one).
[[noreturn]] void run_host_template(HostMain host_main, kj::ArrayPtr<char> arguments);

// The template's argv, with that room.
std::vector<std::string> host_template_argv();

} // namespace bh::host
