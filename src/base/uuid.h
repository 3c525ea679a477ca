// Uuid: random (version 4) identifiers for distributions, in their canonical text form.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bh {

struct Uuid {
    std::array<uint8_t, 16> bytes {};

    // A fresh random version-4 UUID from getrandom(2).
    static Uuid random();
    // Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (either case); nullopt on anything else.
    static std::optional<Uuid> parse(std::string_view text);
    std::string to_string() const;
    bool operator==(const Uuid&) const = default;
};

} // namespace bh
