// open_verified: file -> sealed memfd, hashed and verified with OpenSSL's libcrypto, in the
// service (the plugin hosts never link libcrypto).
#include "service/plugin-verify.h"

#include <bulkhead/plugin_api.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bh::service {

namespace {

    constexpr off_t max_plugin_size = 512L * 1024 * 1024;

    Error untrusted(const std::string& why)
    {
        return Error { BH_E_PLUGIN_UNTRUSTED, why };
    }

    std::string hex(const unsigned char* bytes, size_t n)
    {
        static const char digits[] = "0123456789abcdef";
        std::string out;
        for (size_t i = 0; i < n; ++i) {
            out.push_back(digits[bytes[i] >> 4]);
            out.push_back(digits[bytes[i] & 15]);
        }
        return out;
    }

    std::string lower(std::string text)
    {
        for (char& c : text)
            c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
        return text;
    }

    Status check_file(const std::string& path, const struct stat& st)
    {
        if (!S_ISREG(st.st_mode))
            return untrusted(path + " is not a regular file");
        if (st.st_uid != 0)
            return untrusted(path + " is not owned by root (owner " + std::to_string(st.st_uid) + ")");
        if (st.st_mode & (S_IWGRP | S_IWOTH)) {
            char mode[8];
            snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
            return untrusted(path + " is writable by group or others (owner 0, mode " + mode + ")");
        }
        if (st.st_size > max_plugin_size)
            return untrusted(path + " is larger than 512 MiB");
        return {};
    }

    // Reads the whole file (we hold it open: later renames cannot change what we read).
    Result<std::vector<unsigned char>> read_all(int fd, const std::string& path, size_t size_hint)
    {
        std::vector<unsigned char> bytes;
        bytes.reserve(size_hint);
        unsigned char buffer[65536];
        for (;;) {
            ssize_t n = read(fd, buffer, sizeof(buffer));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return Error::from_errno(errno, "cannot read " + path);
            if (n == 0)
                return bytes;
            if (bytes.size() + n > static_cast<size_t>(max_plugin_size))
                return untrusted(path + " is larger than 512 MiB");
            bytes.insert(bytes.end(), buffer, buffer + n);
        }
    }

    Result<Fd> sealed_copy(const std::vector<unsigned char>& bytes, const std::string& path)
    {
        // Named after the plugin: /proc/self/maps then shows "/memfd:<path> (deleted)".
        Fd memfd(memfd_create(path.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!memfd)
            return Error::from_errno(errno, "cannot create a memfd for " + path);
        size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = write(memfd.get(), bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno != EINTR)
                return Error::from_errno(errno, "cannot copy " + path + " into a memfd");
            done += n > 0 ? n : 0;
        }
        if (fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
            return Error::from_errno(errno, "cannot seal the memfd of " + path);
        return memfd;
    }

    Status check_sha256(
        const std::vector<unsigned char>& bytes, const std::string& pinned, const std::string& path)
    {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        if (EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr) != 1)
            return untrusted("cannot compute the sha256 of " + path);
        std::string actual = hex(digest, length);
        if (actual != lower(pinned))
            return untrusted(
                "sha256 mismatch for " + path + ": pinned " + lower(pinned) + ", file has " + actual);
        return {};
    }

    bool verifies(
        const std::vector<unsigned char>& bytes, const std::string& signature, const std::string& pem)
    {
        BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
        EVP_PKEY* key = bio ? PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr) : nullptr;
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        bool ok = key && ctx && EVP_PKEY_id(key) == EVP_PKEY_ED25519
            && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1
            && EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                   signature.size(), bytes.data(), bytes.size())
                == 1;
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(key);
        BIO_free(bio);
        return ok;
    }

    Status check_signature(
        const std::vector<unsigned char>& bytes, const Integrity& integrity, const std::string& path)
    {
        if (integrity.signature.size() != 64)
            return untrusted("the signature of " + path + " is not a 64-byte Ed25519 signature");
        for (const auto& key : integrity.trusted_keys)
            if (verifies(bytes, integrity.signature, key))
                return {};
        return untrusted("the signature of " + path + " does not verify against any of the "
            + std::to_string(integrity.trusted_keys.size()) + " trusted keys");
    }

} // namespace

Result<Fd> open_verified(const std::string& path, const Integrity& integrity)
{
    Fd file(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!file && errno == ELOOP)
        return untrusted(path + " is a symbolic link; configure the path of the file itself");
    if (!file)
        return Error::from_errno(errno, "cannot open plugin " + path);
    struct stat st { };
    if (fstat(file.get(), &st) < 0)
        return Error::from_errno(errno, "cannot stat " + path);
    BH_TRY(check_file(path, st));
    auto bytes = read_all(file.get(), path, static_cast<size_t>(st.st_size));
    if (!bytes)
        return bytes.take_error();
    auto memfd = sealed_copy(bytes.value(), path);
    if (!memfd)
        return memfd.take_error();
    if (!integrity.sha256.empty())
        BH_TRY(check_sha256(bytes.value(), integrity.sha256, path));
    if (!integrity.signature.empty())
        BH_TRY(check_signature(bytes.value(), integrity, path));
    return std::move(memfd.value());
}

} // namespace bh::service
