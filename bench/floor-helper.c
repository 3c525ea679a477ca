/* floor-helper: the smallest programs the floors are measured against (bench/README.md). Each
 * talks over fd 3, a Unix socket the benchmark created and handed down.
 *
 *   floor-helper echo   reads 64 bytes and writes them back, until EOF (the round-trip floor)
 *   floor-helper byte   writes one byte and exits (the activation floor)
 *   floor-helper idle   waits for EOF (the memory floor: an idle process that is reachable) */
#include <string.h>
#include <unistd.h>

#define CHANNEL 3
#define MESSAGE 64

static int read_full(char* buffer, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(CHANNEL, buffer + got, size - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int echo(void)
{
    char buffer[MESSAGE];
    while (read_full(buffer, sizeof(buffer)) == 0) {
        if (write(CHANNEL, buffer, sizeof(buffer)) != (ssize_t)sizeof(buffer))
            return 1;
    }
    return 0;
}

int main(int argc, char** argv)
{
    char byte = 'x';
    if (argc == 2 && strcmp(argv[1], "echo") == 0)
        return echo();
    if (argc == 2 && strcmp(argv[1], "byte") == 0)
        return write(CHANNEL, &byte, 1) == 1 ? 0 : 1;
    if (argc == 2 && strcmp(argv[1], "idle") == 0)
        return read(CHANNEL, &byte, 1) < 0;
    return 2;
}
