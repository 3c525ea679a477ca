// The hook codec: what the container and image hooks carry across the host boundary.
#include "plugin/hook-codec.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

namespace {

using namespace bh;

TEST(HookCodec, TextHookRoundTripsSessionAndWholeText)
{
    capnp::MallocMessageBuilder message;
    auto params = message.initRoot<proto::PluginHost::OnContainerStartedParams>();
    host::ContainerArgs session { 7, "work", 1234, 1000, 1000, "alice" };
    // Longer than any other text a hook carries (those are cut at 4096 bytes), and with a quote
    // and a backslash: the JSON must arrive byte for byte.
    std::string json
        = R"({"Name":"web","Config":{"Env":["A=\"\\"]},"Pad":")" + std::string(100000, 'x') + "\"}";
    host::encode_container(session, params.initSession());
    params.setText(json);

    auto reader = params.asReader();
    auto decoded = host::decode_container(reader.getSession());
    EXPECT_EQ(decoded.session_id, 7u);
    EXPECT_EQ(decoded.display_name, "work");
    EXPECT_EQ(decoded.application_pid, 1234);
    EXPECT_EQ(decoded.user_name, "alice");
    auto text = host::decode_hook_text(reader.getText());
    ASSERT_TRUE(text);
    EXPECT_EQ(text.value(), json);
}

TEST(HookCodec, TextOverTheCapIsAProtocolError)
{
    capnp::MallocMessageBuilder message;
    auto params = message.initRoot<proto::PluginHost::OnImageDeletedParams>();
    params.setText(std::string(host::max_hook_text, 'a'));
    EXPECT_TRUE(host::decode_hook_text(params.asReader().getText()));
    params.setText(std::string(host::max_hook_text + 1, 'a'));
    auto text = host::decode_hook_text(params.asReader().getText());
    ASSERT_FALSE(text);
    EXPECT_EQ(text.error().code, -EPROTO);
}

// The hook lane carries every hook as one HookRequest: each kind keeps what its hook needs.
TEST(HookCodec, HookRequestRoundTripsEveryKind)
{
    host::HookCall vm { host::Hook::vm_started, { 3, 1000, 1001, "bob" }, 0x5 };
    host::HookCall distro { host::Hook::distribution_registered, { 4, 0, 0, "root" } };
    distro.distro.id.bytes[0] = 0xab;
    distro.distro.name = "debian";
    distro.distro.package = "pkg";
    host::HookCall image { host::Hook::image_created };
    image.container = { 9, "work", 77, 1000, 1000, "alice" };
    image.text = R"({"Id":"sha256:1"})";
    for (const host::HookCall* call : { &vm, &distro, &image }) {
        capnp::MallocMessageBuilder message;
        host::encode_hook_request(*call, message.initRoot<proto::HookRequest>());
        auto decoded = host::decode_hook_request(message.getRoot<proto::HookRequest>().asReader());
        ASSERT_TRUE(decoded) << decoded.error().message;
        EXPECT_EQ(decoded->hook, call->hook);
        EXPECT_EQ(decoded->session.session_id, call->session.session_id);
        EXPECT_EQ(decoded->session.user_name, call->session.user_name);
        EXPECT_EQ(decoded->custom_config_flags, call->custom_config_flags);
        EXPECT_EQ(decoded->distro.id.bytes, call->distro.id.bytes);
        EXPECT_EQ(decoded->distro.name, call->distro.name);
        EXPECT_EQ(decoded->distro.package, call->distro.package);
        EXPECT_EQ(decoded->distro.flavor, std::nullopt);
        EXPECT_EQ(decoded->container.display_name, call->container.display_name);
        EXPECT_EQ(decoded->container.application_pid, call->container.application_pid);
        EXPECT_EQ(decoded->text, call->text);
    }
}

// What a hook request may not be: a hook this version does not know, a distribution id that is
// not 16 bytes, a text over the cap. Each is the service breaking the protocol: an Error.
TEST(HookCodec, BadHookRequestsAreProtocolErrors)
{
    capnp::MallocMessageBuilder message;
    auto request = message.initRoot<proto::HookRequest>();
    request.setHook(14);
    EXPECT_FALSE(host::decode_hook_request(request.asReader()));
    request.setHook(static_cast<uint32_t>(host::Hook::distribution_started));
    request.initDistribution().setId(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("short"), 5));
    auto distro = host::decode_hook_request(request.asReader());
    ASSERT_FALSE(distro);
    EXPECT_EQ(distro.error().code, -EPROTO);
    request.setHook(static_cast<uint32_t>(host::Hook::container_started));
    request.setText(std::string(host::max_hook_text + 1, 'a'));
    EXPECT_FALSE(host::decode_hook_request(request.asReader()));
}

} // namespace
