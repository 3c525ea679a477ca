// Logging: one write() per line.
#include "base/log.h"

#include <string>
#include <unistd.h>

namespace bh {

void log(LogLevel level, std::string_view message)
{
    static constexpr const char* prefixes[] = { "<7>debug: ", "<6>", "<4>warning: ", "<3>error: " };
    std::string line = prefixes[static_cast<int>(level)];
    line.append(message);
    line.push_back('\n');
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

} // namespace bh
