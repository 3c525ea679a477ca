// Uuid: generation, parsing, formatting.
#include "base/uuid.h"

#include <cstdlib>
#include <sys/random.h>

namespace bh {

Uuid Uuid::random()
{
    Uuid uuid;
    if (getrandom(uuid.bytes.data(), uuid.bytes.size(), 0) != static_cast<ssize_t>(uuid.bytes.size()))
        std::abort(); // The kernel's CSPRNG cannot fail for 16 bytes once booted.
    uuid.bytes[6] = (uuid.bytes[6] & 0x0f) | 0x40;
    uuid.bytes[8] = (uuid.bytes[8] & 0x3f) | 0x80;
    return uuid;
}

namespace {

    int hex_value(char c)
    {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        return -1;
    }

    bool is_dash_position(size_t i)
    {
        return i == 8 || i == 13 || i == 18 || i == 23;
    }

} // namespace

std::optional<Uuid> Uuid::parse(std::string_view text)
{
    if (text.size() != 36)
        return std::nullopt;
    Uuid uuid;
    size_t out = 0;
    for (size_t i = 0; i < text.size(); i += 2) {
        if (is_dash_position(i) && text[i++] != '-')
            return std::nullopt;
        int high = hex_value(text[i]);
        int low = hex_value(text[i + 1]);
        if (high < 0 || low < 0)
            return std::nullopt;
        uuid.bytes[out++] = static_cast<uint8_t>(high << 4 | low);
    }
    return uuid;
}

std::string Uuid::to_string() const
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string text;
    for (size_t i = 0; i < bytes.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text.push_back('-');
        text.push_back(digits[bytes[i] >> 4]);
        text.push_back(digits[bytes[i] & 0xf]);
    }
    return text;
}

} // namespace bh
