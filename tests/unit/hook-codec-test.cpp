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

} // namespace
