// Unit tests of Uuid: generation, formatting, parsing.
#include "base/uuid.h"

#include <gtest/gtest.h>

namespace bh {

TEST(Uuid, RandomIsVersion4AndRoundTrips)
{
    Uuid a = Uuid::random();
    Uuid b = Uuid::random();
    EXPECT_NE(a, b);
    std::string text = a.to_string();
    ASSERT_EQ(text.size(), 36u);
    EXPECT_EQ(text[14], '4');
    auto parsed = Uuid::parse(text);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, a);
}

TEST(Uuid, RejectsMalformedText)
{
    EXPECT_FALSE(Uuid::parse("").has_value());
    EXPECT_FALSE(Uuid::parse("0123456789abcdef0123456789abcdef0123").has_value());
    EXPECT_FALSE(Uuid::parse("0123456x-89ab-cdef-0123-456789abcdef").has_value());
    EXPECT_TRUE(Uuid::parse("0123456A-89ab-cdef-0123-456789abcdef").has_value());
}

} // namespace bh
