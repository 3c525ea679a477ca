// HookCall <-> proto/plugin_host.capnp: how hook arguments cross the process boundary.
#pragma once

#include "plugin/plugin-runtime.h"

#include <proto/plugin_host.capnp.h>

namespace bh::host {

// The PluginHost method of each hook takes (session[, customConfigFlags | distribution]); these
// fill and read those parameters.
void encode_session(const SessionArgs& session, proto::SessionInfo::Builder out);
void encode_distro(const DistroArgs& distro, proto::DistributionInfo::Builder out);
SessionArgs decode_session(proto::SessionInfo::Reader in);
// A distribution id that is not 16 bytes is a protocol violation: an Error.
Result<DistroArgs> decode_distro(proto::DistributionInfo::Reader in);

void encode_container(const ContainerArgs& session, proto::ContainerSessionInfo::Builder out);
ContainerArgs decode_container(proto::ContainerSessionInfo::Reader in);

// The text of the container and image hooks (HookCall::text): the inspect JSON or an Id. Longer
// than max_hook_text is a protocol violation: an Error (never cut, which would break the JSON).
inline constexpr size_t max_hook_text = 1 << 20;
Result<std::string> decode_hook_text(capnp::Text::Reader in);

void encode_outcome(const HookOutcome& outcome, proto::HookResult::Builder out);
HookOutcome decode_outcome(proto::HookResult::Reader in);

// The whole of a hook as one lane message (proto HookRequest): what the hook lane carries.
void encode_hook_request(const HookCall& call, proto::HookRequest::Builder out);
// An unknown hook, a bad distribution id or an oversized text is a protocol violation: an Error.
Result<HookCall> decode_hook_request(proto::HookRequest::Reader in);

// 16 bytes of capnp Data as a Uuid; nullopt for any other size.
std::optional<Uuid> uuid_of(capnp::Data::Reader data);

} // namespace bh::host
