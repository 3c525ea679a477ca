// bulkhead: the command-line client of bulkheadd; wires the parser, the connection and the commands.
#include "cli/client.h"
#include "cli/commands.h"

#include <csignal>
#include <cstdlib>

int main(int argc, char** argv)
{
    bh::cli::Invocation inv;
    const char* env_dir = std::getenv("BULKHEAD_RUNTIME_DIR");
    inv.runtime_dir = env_dir && *env_dir ? env_dir : "/run/bulkhead";
    CLI::App app { "bulkhead: run Linux distributions in your own lightweight VM" };
    app.require_subcommand(0, 1); // none: your login shell in the default distribution, as `wsl` does
    app.add_option(
        "--runtime-dir", inv.runtime_dir, "The service's runtime directory (env BULKHEAD_RUNTIME_DIR)");
    app.add_option("--uid", inv.uid, "Act on this user's session (root only)");
    app.set_version_flag("--version", BULKHEAD_VERSION);
    std::function<int(bh::cli::Client&)> run;
    bh::cli::add_commands(app, inv, run);
    CLI11_PARSE(app, argc, argv);

    signal(SIGPIPE, SIG_IGN);
    auto io = kj::setupAsyncIo();
    auto client = bh::cli::Client::connect(io, inv.runtime_dir);
    if (!client)
        return bh::cli::report({ client.take_error(), "Bulkhead/Cli/Connect" });
    return run(*client.value());
}
