// Result values for expected failures: a negative error code plus a human sentence.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace bh {

// An expected failure. `code` is a negative errno or a BH_E_* code; `message` says what
// failed, on what, and why, ready to print to a user.
struct Error {
    int code = -EIO;
    std::string message;

    static Error from_errno(int err, std::string what)
    {
        return Error { -err, std::move(what) + ": " + std::strerror(err) };
    }
};

// Either a value or an Error. Callers must look at it: [[nodiscard]].
template<typename T> class [[nodiscard]] Result {
public:
    Result(T value)
        : m_state(std::move(value))
    {
    }
    Result(Error error)
        : m_state(std::move(error))
    {
    }

    bool ok() const { return m_state.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(m_state); }
    T&& value() && { return std::get<0>(std::move(m_state)); }
    T* operator->() { return &std::get<0>(m_state); }
    T& operator*() { return std::get<0>(m_state); }
    const Error& error() const { return std::get<1>(m_state); }
    Error&& take_error() { return std::get<1>(std::move(m_state)); }

private:
    std::variant<T, Error> m_state;
};

// Result<void>: success carries nothing.
template<> class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error)
        : m_error(std::move(error))
        , m_failed(true)
    {
    }

    bool ok() const { return !m_failed; }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return m_error; }
    Error&& take_error() { return std::move(m_error); }

private:
    Error m_error;
    bool m_failed = false;
};

using Status = Result<void>;

} // namespace bh

// Returns early from the enclosing function with the error of `expr` when it failed.
#define BH_TRY(expr)                                                                                         \
    do {                                                                                                     \
        auto _bh_result = (expr);                                                                            \
        if (!_bh_result.ok())                                                                                \
            return _bh_result.take_error();                                                                  \
    } while (0)
