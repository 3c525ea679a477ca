// HookCall <-> Cap'n Proto.
#include "plugin/hook-codec.h"

namespace bh::host {

namespace {

    constexpr size_t max_text = 4096;

    std::string text_of(capnp::Text::Reader text)
    {
        return std::string(text.cStr(), std::min(text.size(), max_text));
    }

    // Nullable C strings travel as absent pointers.
    template<typename Has> std::optional<std::string> nullable(bool present, Has text)
    {
        if (!present)
            return std::nullopt;
        return text_of(text);
    }

} // namespace

void encode_container(const ContainerArgs& session, proto::ContainerSessionInfo::Builder out)
{
    out.setSessionId(session.session_id);
    out.setDisplayName(session.display_name);
    out.setApplicationPid(session.application_pid);
    out.setUid(session.uid);
    out.setGid(session.gid);
    out.setUserName(session.user_name);
}

ContainerArgs decode_container(proto::ContainerSessionInfo::Reader in)
{
    return { in.getSessionId(), text_of(in.getDisplayName()), in.getApplicationPid(), in.getUid(),
        in.getGid(), text_of(in.getUserName()) };
}

Result<std::string> decode_hook_text(capnp::Text::Reader in)
{
    if (in.size() > max_hook_text)
        return Error { -EPROTO,
            "a hook's text is " + std::to_string(in.size()) + " bytes, over "
                + std::to_string(max_hook_text) };
    return std::string(in.cStr(), in.size());
}

void encode_session(const SessionArgs& session, proto::SessionInfo::Builder out)
{
    out.setSessionId(session.session_id);
    out.setUid(session.uid);
    out.setGid(session.gid);
    out.setUserName(session.user_name);
}

void encode_distro(const DistroArgs& distro, proto::DistributionInfo::Builder out)
{
    out.setId(capnp::Data::Reader(distro.id.bytes.data(), distro.id.bytes.size()));
    out.setName(distro.name);
    out.setPidNamespace(distro.pid_namespace);
    out.setInitPid(distro.init_pid);
    if (distro.package)
        out.setPackage(*distro.package);
    if (distro.flavor)
        out.setFlavor(*distro.flavor);
    if (distro.version)
        out.setVersion(*distro.version);
}

SessionArgs decode_session(proto::SessionInfo::Reader in)
{
    return { in.getSessionId(), in.getUid(), in.getGid(), text_of(in.getUserName()) };
}

std::optional<Uuid> uuid_of(capnp::Data::Reader data)
{
    if (data.size() != 16)
        return std::nullopt;
    Uuid id;
    std::copy(data.begin(), data.end(), id.bytes.begin());
    return id;
}

Result<DistroArgs> decode_distro(proto::DistributionInfo::Reader in)
{
    auto id = uuid_of(in.getId());
    if (!id)
        return Error { -EPROTO, "a distribution id must be 16 bytes" };
    DistroArgs out { *id, text_of(in.getName()), in.getPidNamespace(), in.getInitPid() };
    out.package = nullable(in.hasPackage(), in.getPackage());
    out.flavor = nullable(in.hasFlavor(), in.getFlavor());
    out.version = nullable(in.hasVersion(), in.getVersion());
    return out;
}

void encode_outcome(const HookOutcome& outcome, proto::HookResult::Builder out)
{
    out.setCode(outcome.code);
    if (outcome.message)
        out.setMessage(*outcome.message);
}

HookOutcome decode_outcome(proto::HookResult::Reader in)
{
    HookOutcome out;
    out.code = in.getCode() <= 0 ? in.getCode() : -EPROTO;
    if (out.code != 0 && in.hasMessage())
        out.message = text_of(in.getMessage());
    return out;
}

void encode_hook_request(const HookCall& call, proto::HookRequest::Builder out)
{
    out.setHook(static_cast<uint32_t>(call.hook));
    switch (call.hook) {
    case Hook::vm_started:
        out.setCustomConfigFlags(call.custom_config_flags);
        [[fallthrough]];
    case Hook::vm_stopping:
        encode_session(call.session, out.initSession());
        return;
    case Hook::distribution_started:
    case Hook::distribution_stopping:
    case Hook::distribution_registered:
    case Hook::distribution_unregistered:
        encode_session(call.session, out.initSession());
        encode_distro(call.distro, out.initDistribution());
        return;
    case Hook::container_started:
    case Hook::container_stopping:
    case Hook::image_created:
    case Hook::image_deleted:
        out.setText(call.text);
        [[fallthrough]];
    case Hook::container_session_created:
    case Hook::container_session_stopping:
    case Hook::container_vm_started:
    case Hook::container_vm_stopping:
        encode_container(call.container, out.initContainer());
        return;
    }
}

Result<HookCall> decode_hook_request(proto::HookRequest::Reader in)
{
    if (in.getHook() > static_cast<uint32_t>(Hook::container_vm_stopping))
        return Error { -EPROTO, "an unknown hook " + std::to_string(in.getHook()) };
    HookCall call { static_cast<Hook>(in.getHook()) };
    switch (call.hook) {
    case Hook::vm_started:
        call.custom_config_flags = in.getCustomConfigFlags();
        [[fallthrough]];
    case Hook::vm_stopping:
        call.session = decode_session(in.getSession());
        break;
    case Hook::distribution_started:
    case Hook::distribution_stopping:
    case Hook::distribution_registered:
    case Hook::distribution_unregistered: {
        call.session = decode_session(in.getSession());
        auto distro = decode_distro(in.getDistribution());
        if (!distro)
            return distro.take_error();
        call.distro = std::move(distro.value());
        break;
    }
    case Hook::container_started:
    case Hook::container_stopping:
    case Hook::image_created:
    case Hook::image_deleted: {
        auto text = decode_hook_text(in.getText());
        if (!text)
            return text.take_error();
        call.text = std::move(text.value());
        [[fallthrough]];
    }
    case Hook::container_session_created:
    case Hook::container_session_stopping:
    case Hook::container_vm_started:
    case Hook::container_vm_stopping:
        call.container = decode_container(in.getContainer());
        break;
    }
    return call;
}

} // namespace bh::host
