// The images and containers of container sessions: ContainerSessions' store operations.
//
// Everything that touches image or container files runs inside the session's VM, as the
// session's user, through oci-helper.sh (skopeo, umoci, crun). The service keeps the index
// (references, ids, the containers' states) and fires the hooks. What the helper prints comes
// from the user's VM: it is parsed as hostile input, bounded, and only validated values reach
// the hooks' JSON.
#include "service/container-sessions.h"

#include "base/log.h"

#include <algorithm>
#include <arpa/inet.h>
#include <bulkhead/plugin_api.h>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bh::service {

namespace {

    // oci-helper.sh, embedded at build time (src/service/CMakeLists.txt).
    constexpr const char oci_helper[] =
#include "oci-helper.inc"
        ;

    constexpr size_t max_tool_output = 16u << 20; // what the helper may print for one step
    constexpr size_t max_image_json = 1u << 20; // one image's manifest and config, as printed
    constexpr size_t max_images_per_load = 64;
    constexpr size_t max_images = 1024; // per session
    constexpr size_t max_containers = 256; // per session, every state
    // What the index holds lives in the service's memory, and lists go back in one message of
    // at most 2 MiB: one image's or container's JSON is at most 64 KiB, one image has at most 64
    // tags, and a user's images and containers take at most 1.5 MiB of JSON over all their
    // sessions (a few thousand ordinary images). Each tag counts as its longest form.
    constexpr size_t max_record_json = 64u << 10;
    constexpr size_t max_tags_per_image = 64;
    constexpr size_t tag_bytes = 256;
    constexpr size_t max_index_bytes_per_user = 1536u << 10;
    constexpr size_t max_args = 4096; // command and environment entries of a container
    constexpr const char* never = "0001-01-01T00:00:00Z"; // a time that has not happened

    using json = nlohmann::json;

    Result<Fd> copy_fd(const Fd& fd)
    {
        Fd copy(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
        if (!copy)
            return Error::from_errno(errno, "cannot duplicate a file descriptor");
        return copy;
    }

    Result<Fd> make_memfd(const char* name)
    {
        Fd fd(::memfd_create(name, MFD_CLOEXEC));
        if (!fd)
            return Error::from_errno(errno, "cannot create a memfd");
        return fd;
    }

    Result<Fd> memfd_with(const char* name, const std::string& text)
    {
        auto made = make_memfd(name);
        if (!made)
            return made.take_error();
        Fd fd = std::move(made.value());
        for (size_t done = 0; done < text.size();) {
            ssize_t n = ::pwrite(fd.get(), text.data() + done, text.size() - done, done);
            if (n < 0)
                return Error::from_errno(errno, "cannot fill a memfd");
            done += n;
        }
        return fd;
    }

    // Up to `max` bytes from the start of `fd` (a memfd the VM wrote; it may be anything).
    std::string read_front(int fd, size_t max)
    {
        std::string text;
        char buffer[65536];
        while (text.size() < max) {
            ssize_t n = ::pread(fd, buffer, std::min(sizeof(buffer), max - text.size()), text.size());
            if (n <= 0)
                break;
            text.append(buffer, n);
        }
        return text;
    }

    // The last lines of a tool's stderr, as one line for an error message.
    std::string tail_of(int fd)
    {
        struct stat st;
        if (::fstat(fd, &st) < 0)
            return {};
        constexpr off_t keep = 2048;
        off_t from = st.st_size > keep ? st.st_size - keep : 0;
        std::string text(static_cast<size_t>(st.st_size - from), '\0');
        ssize_t n = ::pread(fd, text.data(), text.size(), from);
        text.resize(n > 0 ? n : 0);
        for (char& c : text) {
            if (c == '\n')
                c = ' ';
            else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
                c = '?';
        }
        while (!text.empty() && text.back() == ' ')
            text.pop_back();
        return text;
    }

    std::string random_hex(size_t bytes)
    {
        std::string raw(bytes, '\0');
        for (size_t done = 0; done < bytes;) {
            ssize_t n = ::getrandom(raw.data() + done, bytes - done, 0);
            if (n > 0)
                done += n;
        }
        static constexpr char digits[] = "0123456789abcdef";
        std::string hex;
        for (unsigned char c : raw) {
            hex += digits[c >> 4];
            hex += digits[c & 15];
        }
        return hex;
    }

    std::string now_rfc3339()
    {
        struct timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        ::gmtime_r(&ts.tv_sec, &tm);
        char text[64];
        size_t n = ::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
        std::snprintf(text + n, sizeof(text) - n, ".%09ldZ", ts.tv_nsec);
        return text;
    }

    bool is_hex(const std::string& text)
    {
        return !text.empty() && text.find_first_not_of("0123456789abcdef") == std::string::npos;
    }

    bool is_image_id(const std::string& id)
    {
        return id.size() == 71 && id.rfind("sha256:", 0) == 0 && is_hex(id.substr(7));
    }

    // A reference as the store keys it: "name:tag" (":latest" added), docker.io's default
    // prefixes dropped, so that "debian", "debian:latest" and "docker.io/library/debian:latest"
    // name one image. Digests (name@sha256:...) are not references here.
    Result<std::string> normalize_reference(std::string ref)
    {
        auto bad = [&](const char* why) {
            return Error { -EINVAL, "invalid image reference '" + ref + "': " + why };
        };
        if (ref.empty() || ref.size() > 255)
            return bad("it must have 1 to 255 characters");
        if (ref.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:")
            != std::string::npos)
            return bad("only letters, digits and . _ - / : may appear");
        for (const char* prefix : { "docker.io/library/", "docker.io/" }) {
            if (ref.rfind(prefix, 0) == 0) {
                ref.erase(0, std::strlen(prefix));
                break;
            }
        }
        size_t slash = ref.rfind('/');
        size_t colon = ref.rfind(':');
        if (colon == std::string::npos || (slash != std::string::npos && colon < slash))
            ref += ":latest";
        if (ref.front() == '/' || ref.front() == ':' || ref.find("//") != std::string::npos
            || ref.back() == ':')
            return bad("it is not of the form [registry/]name[:tag]");
        return ref;
    }

    // Whether a reference names a registry on this VM's loopback: localhost, 127.0.0.0/8 or
    // [::1], with any port. Only those may be reached without TLS (--insecure).
    bool is_loopback_registry(const std::string& ref)
    {
        size_t slash = ref.find('/');
        if (slash == std::string::npos)
            return false;
        std::string host = ref.substr(0, slash);
        size_t colon = host.find(':');
        if (colon != std::string::npos) {
            std::string port = host.substr(colon + 1);
            if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
                return false;
            host.resize(colon);
        }
        struct in_addr address;
        if (::inet_pton(AF_INET, host.c_str(), &address) == 1)
            return (ntohl(address.s_addr) >> 24) == 127;
        return host == "localhost";
    }

    bool is_valid_container_name(const std::string& name)
    {
        if (name.empty() || name.size() > 64 || !std::isalnum(static_cast<unsigned char>(name[0])))
            return false;
        return name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
            == std::string::npos;
    }

    // A member of the image config copied only when it has the type the spec gives it.
    json strings_or_null(const json& object, const char* key)
    {
        if (!object.is_object() || !object.contains(key))
            return nullptr;
        const json& value = object[key];
        if (!value.is_array())
            return nullptr;
        json out = json::array();
        for (const json& item : value) {
            if (!item.is_string())
                return nullptr;
            out.push_back(item);
        }
        return out;
    }

    json string_or_empty(const json& object, const char* key)
    {
        if (object.is_object() && object.contains(key) && object[key].is_string())
            return object[key];
        return "";
    }

    json labels_of(const json& object)
    {
        json out = json::object();
        if (object.is_object() && object.contains("Labels") && object["Labels"].is_object()) {
            for (auto& [key, value] : object["Labels"].items()) {
                if (value.is_string())
                    out[key] = value;
            }
        }
        return out;
    }

    json config_view(const json& config)
    {
        const json& c = config.is_object() && config.contains("config") ? config["config"] : json(nullptr);
        return json { { "Cmd", strings_or_null(c, "Cmd") },
            { "Entrypoint", strings_or_null(c, "Entrypoint") }, { "Env", strings_or_null(c, "Env") },
            { "WorkingDir", string_or_empty(c, "WorkingDir") }, { "User", string_or_empty(c, "User") },
            { "Labels", labels_of(c) } };
    }

    // One line the helper printed for a loaded image: {tag, manifest, config}.
    struct LoadedImage {
        std::string tag; // normalized; empty for an image without one
        json inspect;
    };

    Result<LoadedImage> parse_loaded(const std::string& line)
    {
        auto bad = [](const std::string& why) {
            return Error { -EINVAL, "the image store printed an invalid image: " + why };
        };
        if (line.size() > max_image_json)
            return bad("its manifest and config are larger than 1 MiB");
        json doc = json::parse(line, nullptr, false);
        if (!doc.is_object() || !doc.contains("tag") || !doc["tag"].is_string() || !doc.contains("manifest")
            || !doc["manifest"].is_object() || !doc.contains("config") || !doc["config"].is_object())
            return bad("not the {tag, manifest, config} object expected");
        const json& manifest = doc["manifest"];
        const json& config = doc["config"];
        if (!manifest.contains("config") || !manifest["config"].is_object()
            || !manifest["config"].contains("digest") || !manifest["config"]["digest"].is_string())
            return bad("its manifest names no config");
        std::string id = manifest["config"]["digest"];
        if (!is_image_id(id))
            return bad("its config digest is not a sha256 digest");
        LoadedImage out;
        if (!doc["tag"].get<std::string>().empty()) {
            auto tag = normalize_reference(doc["tag"].get<std::string>());
            if (!tag)
                return tag.take_error();
            out.tag = std::move(tag.value());
        }
        uint64_t size = 0;
        if (manifest.contains("layers") && manifest["layers"].is_array()) {
            for (const json& layer : manifest["layers"]) {
                if (layer.is_object() && layer.contains("size") && layer["size"].is_number_unsigned())
                    size += layer["size"].get<uint64_t>();
            }
        }
        json layers = json::array();
        std::string rootfs_type = "layers";
        if (config.contains("rootfs") && config["rootfs"].is_object()) {
            layers = strings_or_null(config["rootfs"], "diff_ids");
            if (layers.is_null())
                layers = json::array();
            if (config["rootfs"].contains("type") && config["rootfs"]["type"].is_string())
                rootfs_type = config["rootfs"]["type"];
        }
        out.inspect = json { { "Id", id }, { "RepoTags", json::array() }, { "RepoDigests", json::array() },
            { "Created", string_or_empty(config, "created") },
            { "Architecture", string_or_empty(config, "architecture") },
            { "Os", string_or_empty(config, "os") }, { "Size", size }, { "Config", config_view(config) },
            { "RootFS", json { { "Type", rootfs_type }, { "Layers", layers } } } };
        size_t size_of = out.inspect.dump().size();
        if (size_of > max_record_json)
            return Error { -E2BIG,
                "image " + id + " has a config of " + std::to_string(size_of)
                    + " bytes (labels, environment, layers): at most 64 KiB is kept" };
        return out;
    }

    // An exited container's status as a shell gives it: the exit code, or 128 + the signal.
    int exit_code_of(int wait_status)
    {
        if (WIFEXITED(wait_status))
            return WEXITSTATUS(wait_status);
        if (WIFSIGNALED(wait_status))
            return 128 + WTERMSIG(wait_status);
        return 255;
    }

    constexpr const char* signal_names[][2] = { { "1", "HUP" }, { "2", "INT" }, { "3", "QUIT" },
        { "9", "KILL" }, { "10", "USR1" }, { "12", "USR2" }, { "15", "TERM" } };

    std::string signal_name(int signal)
    {
        for (auto& [number, name] : signal_names) {
            if (std::to_string(signal) == number)
                return name;
        }
        return std::to_string(signal);
    }

} // namespace

std::vector<std::string> ImageRecord::tags() const
{
    std::vector<std::string> out;
    for (const json& tag : inspect["RepoTags"])
        out.push_back(tag.get<std::string>());
    return out;
}

// --- the helper and the store's queue ---------------------------------------------------------

// Runs one verb of oci-helper.sh in the session's running VM; its stdout, or an error naming
// `what` with the end of the helper's stderr (the tools' own words).
kj::Promise<Result<std::string>> ContainerSessions::run_tool(
    ContainerSession& session, std::vector<std::string> args, Fd input, std::string what)
{
    VmInstance* vm = session.serving_vm();
    if (!vm)
        return Result<std::string>(Error { BH_E_VM_NOT_RUNNING, what + ": the session's VM is not running" });
    auto out = make_memfd("bulkhead-oci-out");
    auto err = make_memfd("bulkhead-oci-err");
    if (!out || !err)
        return Result<std::string>(out ? err.take_error() : out.take_error());
    if (!input) {
        input = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!input)
            return Result<std::string>(Error::from_errno(errno, "cannot open /dev/null"));
    }
    auto out_dup = copy_fd(out.value());
    auto err_dup = copy_fd(err.value());
    if (!out_dup || !err_dup)
        return Result<std::string>(out_dup ? err_dup.take_error() : out_dup.take_error());
    std::vector<std::string> argv { "sh", "-c", oci_helper, "bulkhead-oci" };
    argv.insert(argv.end(), args.begin(), args.end());
    ProgramSpec spec { "/bin/sh", std::move(argv), { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp" },
        "" };
    spec.cwd = "/";
    std::array<Fd, 3> stdio { std::move(input), std::move(out_dup.value()), std::move(err_dup.value()) };
    return call_holding(*vm, [&](VmInstance& vm) { return vm.run("", std::move(spec), std::move(stdio)); })
        .then([out = std::move(out.value()), err = std::move(err.value()), what = std::move(what)](
                  Result<int> status) mutable -> Result<std::string> {
            if (!status)
                return Error { status.error().code, what + ": " + status.error().message };
            int ws = status.value();
            if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
                return read_front(out.get(), max_tool_output);
            std::string said = tail_of(err.get());
            std::string how = WIFSIGNALED(ws) ? "killed by signal " + std::to_string(WTERMSIG(ws))
                                              : "exit status " + std::to_string(exit_code_of(ws));
            return Error { -EIO, what + ": " + (said.empty() ? how : said + " (" + how + ")") };
        });
}

// Runs `step` once every store step before it finished: the files of images and containers
// change one step at a time per session. A cancelled step releases the queue too.
template<typename T, typename F>
kj::Promise<Result<T>> ContainerSessions::in_store(ContainerSession& session, F step)
{
    kj::Promise<void> before = kj::READY_NOW;
    KJ_IF_MAYBE (tail, session.m_store_tail)
        before = tail->addBranch();
    auto done = kj::newPromiseAndFulfiller<void>();
    auto previous = before.fork();
    session.m_store_tail = previous.addBranch()
                               .then([after = kj::mv(done.promise)]() mutable { return kj::mv(after); })
                               .fork();
    return previous.addBranch()
        .then([step = kj::mv(step)]() mutable { return step(); })
        .attach(kj::defer([fulfiller = kj::mv(done.fulfiller)]() mutable { fulfiller->fulfill(); }));
}

// --- images --------------------------------------------------------------------------------------

namespace {

    Result<std::string> resolve_image(const ContainerSession& session, const std::string& ref,
        const std::map<std::string, ImageRecord>& images, const std::map<std::string, std::string>& tags)
    {
        (void)session;
        if (is_image_id(ref) && images.count(ref))
            return ref;
        std::string hex = ref.rfind("sha256:", 0) == 0 ? ref.substr(7) : ref;
        if (hex.size() >= 4 && hex.size() <= 64 && is_hex(hex)) {
            std::string found;
            for (auto& [id, image] : images) {
                if (id.compare(7, hex.size(), hex) == 0) {
                    if (!found.empty())
                        return Error { -EINVAL,
                            "the image id prefix '" + ref + "' names more than one image" };
                    found = id;
                }
            }
            if (!found.empty())
                return found;
        }
        auto normal = normalize_reference(ref);
        if (!normal)
            return normal.take_error();
        auto it = tags.find(normal.value());
        if (it != tags.end())
            return it->second;
        return Error { -ENOENT, "no such image: '" + ref + "'" };
    }

} // namespace

kj::Promise<Result<json>> ContainerSessions::image_load(
    uid_t owner, const std::string& name, Fd archive, const std::string& import_as)
{
    auto found = find(owner, name);
    if (!found)
        return Result<json>(found.take_error());
    std::vector<std::string> verb { "load" };
    std::string what = "cannot load the image archive";
    if (!import_as.empty()) {
        auto normal = normalize_reference(import_as);
        if (!normal)
            return Result<json>(normal.take_error());
        verb = { "import", normal.value() };
        what = "cannot import the archive as " + normal.value();
    }
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& ref = *session;
    ++ref.m_active;
    auto done = kj::defer([this, &ref]() {
        --ref.m_active;
        arm_idle_timer(ref);
    });
    return ensure_vm(ref)
        .then([this, &ref, archive = std::move(archive), verb = std::move(verb), what = std::move(what)](
                  Status started) mutable -> kj::Promise<Result<json>> {
            if (!started)
                return Result<json>(started.take_error());
            return in_store<json>(ref,
                [this, &ref, archive = std::move(archive), verb = std::move(verb),
                    what = std::move(what)]() mutable {
                    return run_tool(ref, std::move(verb), std::move(archive), std::move(what))
                        .then([this, &ref](Result<std::string> printed) -> kj::Promise<Result<json>> {
                            if (!printed)
                                return Result<json>(printed.take_error());
                            return index_images(ref, std::move(printed.value()));
                        });
                });
        })
        .attach(kj::mv(done), kj::mv(session));
}

// Records what a load or pull printed (one line per image it kept), then fires on_image_created
// for each image and each tag it created, in order.
kj::Promise<Result<json>> ContainerSessions::index_images(ContainerSession& ref, std::string printed)
{
    std::vector<LoadedImage> loaded;
    std::string stage; // where the helper left the images for our verdict
    std::string_view rest = printed;
    // The stage's name comes last; find it first, so that every refusal can discard it.
    size_t last = printed.find_last_not_of('\n');
    if (last != std::string::npos) {
        size_t begin = printed.rfind('\n', last);
        begin = begin == std::string::npos ? 0 : begin + 1;
        json line = json::parse(printed.substr(begin, last + 1 - begin), nullptr, false);
        if (line.is_object() && line.size() == 1 && line.contains("stage") && line["stage"].is_string()) {
            std::string name = line["stage"];
            if ((name.rfind("load.", 0) == 0 || name.rfind("pull.", 0) == 0) && name.size() == 11
                && name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 5)
                    == std::string::npos)
                stage = name;
            rest = std::string_view(printed).substr(0, begin);
        }
    }
    if (stage.empty())
        return Result<json>(Error { -EINVAL, "the image store named no valid stage for what it loaded" });
    // A refusal removes what was staged: nothing of a refused load or pull stays in the store.
    auto refuse = [this, &ref, stage](Error error) -> kj::Promise<Result<json>> {
        if (stage.empty())
            return Result<json>(std::move(error));
        return run_tool(ref, { "discard", stage }, Fd(), "cannot discard " + stage)
            .then([error = std::move(error)](
                      Result<std::string>) mutable { return Result<json>(std::move(error)); });
    };
    while (!rest.empty()) {
        size_t end = rest.find('\n');
        std::string line(rest.substr(0, end));
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
        if (line.empty())
            continue;
        if (loaded.size() == max_images_per_load)
            return refuse(Error {
                -E2BIG, "the archive holds more than " + std::to_string(max_images_per_load) + " images" });
        auto image = parse_loaded(line);
        if (!image)
            return refuse(image.take_error());
        loaded.push_back(std::move(image.value()));
    }
    if (loaded.empty())
        return refuse(Error { -EINVAL, "the archive holds no image" });
    // Every limit is checked before anything changes: then the index changes all at once, and
    // the hooks follow, in order.
    size_t new_images = 0, new_bytes = 0;
    std::map<std::string, size_t> tags_of; // image id -> its tags once this step is done
    for (LoadedImage& image : loaded) {
        std::string id = image.inspect["Id"];
        auto known = ref.m_images.find(id);
        if (!tags_of.count(id))
            tags_of[id] = known == ref.m_images.end() ? 0 : known->second.tags().size();
        if (known == ref.m_images.end()) {
            ++new_images;
            new_bytes += image.inspect.dump().size();
        }
        if (!image.tag.empty() && !(ref.m_tags.count(image.tag) && ref.m_tags.at(image.tag) == id)) {
            new_bytes += tag_bytes;
            if (++tags_of[id] > max_tags_per_image)
                return refuse(Error { -ENOSPC, "image " + id + " would have more than 64 tags" });
        }
    }
    if (ref.m_images.size() + new_images > max_images)
        return refuse(
            Error { -ENOSPC, "the session holds " + std::to_string(max_images) + " images already" });
    if (index_bytes(ref.identity.uid) + new_bytes > max_index_bytes_per_user)
        return refuse(Error { -ENOSPC,
            "your images and containers would take more than 1.5 MiB of the service's index: remove some" });
    // The helper moves each staged image to its id, as the service read it.
    std::vector<std::string> keep { "keep", stage };
    for (const LoadedImage& image : loaded)
        keep.push_back(image.inspect["Id"].get<std::string>().substr(7));
    return run_tool(ref, std::move(keep), Fd(), "cannot keep the images")
        .then([this, &ref, loaded = std::move(loaded), refuse](
                  Result<std::string> kept) mutable -> kj::Promise<Result<json>> {
            if (!kept)
                return refuse(kept.take_error());
            json result = json::array();
            std::vector<std::string> created; // inspect JSON, one per tag or image created
            for (LoadedImage& image : loaded) {
                std::string id = image.inspect["Id"];
                bool is_new = !ref.m_images.count(id);
                ImageRecord& record = ref.m_images[id];
                if (is_new)
                    record = ImageRecord { id, image.inspect, image.inspect.dump().size() };
                bool tag_created = false;
                if (!image.tag.empty()) {
                    auto old = ref.m_tags.find(image.tag);
                    if (old == ref.m_tags.end() || old->second != id) {
                        if (old != ref.m_tags.end()) {
                            json& tags = ref.m_images[old->second].inspect["RepoTags"];
                            tags.erase(std::remove(tags.begin(), tags.end(), json(image.tag)), tags.end());
                        }
                        ref.m_tags[image.tag] = id;
                        record.inspect["RepoTags"].push_back(image.tag);
                        tag_created = true;
                    }
                }
                if (is_new || tag_created) {
                    json announced = record.inspect;
                    if (!image.tag.empty()) { // the reference the load named first
                        json tags = json::array({ image.tag });
                        for (const json& tag : record.inspect["RepoTags"])
                            if (tag != image.tag)
                                tags.push_back(tag);
                        announced["RepoTags"] = tags;
                    }
                    created.push_back(announced.dump());
                }
                result.push_back(json { { "Id", id }, { "Tag", image.tag } });
            }
            index_changed(ref);
            kj::Promise<void> hooks = kj::READY_NOW;
            for (std::string& text : created)
                hooks = hooks.then([this, &ref, text = std::move(text)]() mutable {
                    return m_hooks.image_created(ref, std::move(text));
                });
            return hooks.then(
                [result = std::move(result)]() mutable { return Result<json>(std::move(result)); });
        });
}

size_t ContainerSessions::index_bytes(uid_t owner) const
{
    // Every session of the user, published or still being created (whose index may have been
    // read back from its storage already).
    size_t total = 0;
    for (auto& [session_id, session] : m_by_id) {
        if (session->identity.uid != owner)
            continue;
        for (auto& [id, image] : session->m_images)
            total += image.bytes + tag_bytes * image.inspect["RepoTags"].size();
        for (auto& [id, container] : session->m_containers)
            total += container.bytes;
    }
    return total;
}

Result<json> ContainerSessions::image_list(uid_t owner, const std::string& name)
{
    auto session = find(owner, name);
    if (!session)
        return session.take_error();
    json out = json::array();
    for (auto& [id, image] : session.value()->m_images)
        out.push_back(image.inspect);
    return out;
}

Result<json> ContainerSessions::image_inspect(uid_t owner, const std::string& name, const std::string& ref)
{
    auto session = find(owner, name);
    if (!session)
        return session.take_error();
    ContainerSession& s = *session.value();
    auto id = resolve_image(s, ref, s.m_images, s.m_tags);
    if (!id)
        return id.take_error();
    return s.m_images.at(id.value()).inspect;
}

kj::Promise<Result<json>> ContainerSessions::image_remove(
    uid_t owner, const std::string& name, const std::string& ref, bool force)
{
    auto found = find(owner, name);
    if (!found)
        return Result<json>(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& s = *session;
    auto id = resolve_image(s, ref, s.m_images, s.m_tags);
    if (!id)
        return Result<json>(id.take_error());
    ImageRecord& image = s.m_images.at(id.value());
    json result = json::array();
    // A reference that is one of several tags: only the tag goes (no hook), as docker's rmi.
    auto normal = normalize_reference(ref);
    bool by_tag = normal && s.m_tags.count(normal.value()) && s.m_tags.at(normal.value()) == id.value();
    if (by_tag && image.tags().size() > 1) {
        json& tags = image.inspect["RepoTags"];
        tags.erase(std::remove(tags.begin(), tags.end(), json(normal.value())), tags.end());
        s.m_tags.erase(normal.value());
        index_changed(s);
        result.push_back(json { { "Untagged", normal.value() } });
        return Result<json>(std::move(result));
    }
    for (auto& [cid, container] : s.m_containers) {
        if (container.image_id != id.value())
            continue;
        if (container.status == ContainerRecord::Status::running)
            return Result<json>(Error {
                -EBUSY, "image '" + ref + "' is used by the running container '" + container.name + "'" });
        if (!force)
            return Result<json>(Error { -EBUSY,
                "image '" + ref + "' is used by the container '" + container.name
                    + "' (remove it, or use -f)" });
    }
    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    std::string image_id = id.value();
    return ensure_vm(s)
        .then([this, &s, image_id](Status started) -> kj::Promise<Result<json>> {
            if (!started)
                return Result<json>(started.take_error());
            return in_store<json>(s, [this, &s, image_id]() {
                return run_tool(s, { "rmi", image_id.substr(7) }, Fd(), "cannot delete image " + image_id)
                    .then([this, &s, image_id](Result<std::string> deleted) -> kj::Promise<Result<json>> {
                        if (!deleted)
                            return Result<json>(deleted.take_error());
                        json result = json::array();
                        auto it = s.m_images.find(image_id);
                        if (it == s.m_images.end()) // removed meanwhile by another call
                            return Result<json>(std::move(result));
                        for (const std::string& tag : it->second.tags()) {
                            s.m_tags.erase(tag);
                            result.push_back(json { { "Untagged", tag } });
                        }
                        s.m_images.erase(it);
                        index_changed(s);
                        result.push_back(json { { "Deleted", image_id } });
                        return m_hooks.image_deleted(s, image_id)
                            .then([result = std::move(result)]() mutable {
                                return Result<json>(std::move(result));
                            });
                    });
            });
        })
        .attach(kj::mv(done), kj::mv(session));
}

void ContainerSessions::index_changed(ContainerSession& s)
{
    if (s.options.storage.empty())
        return; // a tmpfs dies with the session, and its index with it
    s.m_index_dirty = true;
    save_index(s);
}

void ContainerSessions::save_index(ContainerSession& s)
{
    if (!s.m_index_dirty || s.m_index_saving || !s.serving_vm())
        return; // saved once it runs (adopt_vm), or by the save in progress
    s.m_index_saving = true;
    m_tasks.add(in_store<bool>(s,
        [this, &s]() -> kj::Promise<Result<bool>> {
            s.m_index_dirty = false; // what changes from here on is saved again
            json tags = json::object();
            for (auto& [reference, id] : s.m_tags)
                tags[reference] = id.substr(7);
            auto input = memfd_with("bulkhead-oci-index", json { { "tags", tags } }.dump() + "\n");
            if (!input)
                return Result<bool>(input.take_error());
            return run_tool(s, { "index-save" }, std::move(input.value()), "cannot save the image index")
                .then([](Result<std::string> saved) {
                    return saved ? Result<bool>(true) : Result<bool>(saved.take_error());
                });
        })
                    .then([this, &s](Result<bool> saved) {
                        s.m_index_saving = false;
                        if (!saved) {
                            log_warning("container session '" + s.name + "': " + saved.error().message
                                + " (saved again at its VM's next start)");
                            s.m_index_dirty = true;
                            return;
                        }
                        save_index(s); // what changed meanwhile
                    })
                    .attach(kj::addRef(s)));
}

void ContainerSessions::recover_index(ContainerSession& s)
{
    std::string where = "the image index in the storage of container session '" + s.name + "'";
    Fd file(::openat(s.storage.get(), "index", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!file) {
        if (errno != ENOENT)
            log_warning("cannot open " + where + ": " + std::strerror(errno));
        return;
    }
    // The file is the user's (the VM's root wrote it), a regular one; what lies beyond what a load
    // may print and the references take is not read (its last images are left out).
    struct stat st;
    if (::fstat(file.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != s.identity.uid) {
        log_warning("ignoring " + where + ": not a regular file of its user");
        return;
    }
    std::string text = read_front(file.get(), max_tool_output + (4u << 20));
    std::vector<std::string> lines;
    for (size_t begin = 0; begin < text.size();) {
        size_t end = text.find('\n', begin);
        if (end == std::string::npos)
            end = text.size();
        if (end > begin)
            lines.push_back(text.substr(begin, end - begin));
        begin = end + 1;
    }
    if (lines.empty())
        return;
    json refs = json::parse(lines.front(), nullptr, false);
    lines.erase(lines.begin());
    if (!refs.is_object() || !refs.contains("tags") || !refs["tags"].is_object()) {
        log_warning("ignoring " + where + ": its first line is not the references");
        return;
    }
    size_t budget = index_bytes(s.identity.uid), skipped = 0;
    for (const std::string& line : lines) {
        auto image = parse_loaded(line);
        if (!image || s.m_images.size() >= max_images
            || budget + image->inspect.dump().size() > max_index_bytes_per_user) {
            ++skipped;
            continue;
        }
        std::string id = image->inspect["Id"];
        size_t bytes = image->inspect.dump().size();
        budget += bytes;
        s.m_images[id] = ImageRecord { id, std::move(image->inspect), bytes };
    }
    for (auto& [reference, hex] : refs["tags"].items()) {
        auto normal = normalize_reference(reference);
        std::string id = hex.is_string() ? "sha256:" + hex.get<std::string>() : "";
        auto image = s.m_images.find(id);
        if (!normal || normal.value() != reference || image == s.m_images.end() || s.m_tags.count(reference)
            || image->second.tags().size() >= max_tags_per_image
            || budget + tag_bytes > max_index_bytes_per_user) {
            ++skipped;
            continue;
        }
        budget += tag_bytes;
        s.m_tags[reference] = id;
        image->second.inspect["RepoTags"].push_back(reference);
    }
    log_info("container session '" + s.name + "': " + std::to_string(s.m_images.size()) + " images and "
        + std::to_string(s.m_tags.size()) + " references read back from its storage"
        + (skipped ? " (" + std::to_string(skipped) + " entries left out: invalid, or over the limits)"
                   : ""));
}

// --- containers ----------------------------------------------------------------------------------

namespace {

    // The OCI runtime config of a container: the image's process, the caller's command and
    // environment, the namespaces of a container inside the session's VM. crun runs it as the
    // VM's root, which is the session's user. With `terminal`, the process gets a pseudo-terminal
    // of its own of that size as its console (crun makes it and relays it to its own stdio).
    json runtime_config(const ContainerRecord& container, const std::string& rootfs,
        const std::string& started_fifo, bool network_none, const TerminalSpec* terminal)
    {
        const json& config = container.inspect["Config"];
        // Its volumes: bound from where the service mounted each host folder in the VM.
        json volume_mounts = json::array();
        const json& mounts = container.inspect["Mounts"];
        for (size_t i = 0; i < mounts.size(); ++i)
            volume_mounts.push_back(json { { "destination", mounts[i]["Destination"] }, { "type", "bind" },
                { "source", container.volume_mounts.at(i) },
                { "options", json::array({ "rbind", mounts[i]["RW"].get<bool>() ? "rw" : "ro" }) } });
        json args = json::array();
        if (config["Entrypoint"].is_array())
            for (const json& arg : config["Entrypoint"])
                args.push_back(arg);
        if (config["Cmd"].is_array())
            for (const json& arg : config["Cmd"])
                args.push_back(arg);
        json caps = json::array(
            { "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
                "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT" });
        json namespaces = json::array({ json { { "type", "pid" } }, json { { "type", "ipc" } },
            json { { "type", "uts" } }, json { { "type", "mount" } } });
        if (network_none)
            namespaces.push_back(json { { "type", "network" } });
        std::string cwd = config["WorkingDir"].get<std::string>();
        json out = json {
            { "ociVersion", "1.0.2" },
            { "hostname", container.name },
            { "root", json { { "path", rootfs }, { "readonly", false } } },
            { "process",
                json { { "terminal", terminal != nullptr }, { "user", json { { "uid", 0 }, { "gid", 0 } } },
                    { "args", args }, { "env", config["Env"].is_array() ? config["Env"] : json::array() },
                    { "cwd", cwd.empty() || cwd[0] != '/' ? "/" : cwd },
                    { "capabilities",
                        json { { "bounding", caps }, { "effective", caps }, { "permitted", caps } } },
                    { "noNewPrivileges", true } } },
            { "mounts",
                json::array({ json { { "destination", "/proc" }, { "type", "proc" }, { "source", "proc" } },
                    json { { "destination", "/dev" }, { "type", "tmpfs" }, { "source", "tmpfs" },
                        { "options", json::array({ "nosuid", "strictatime", "mode=755", "size=65536k" }) } },
                    json { { "destination", "/dev/pts" }, { "type", "devpts" }, { "source", "devpts" },
                        { "options",
                            json::array(
                                { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620" }) } },
                    json { { "destination", "/dev/shm" }, { "type", "tmpfs" }, { "source", "shm" },
                        { "options",
                            json::array({ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" }) } },
                    json { { "destination", "/dev/mqueue" }, { "type", "mqueue" }, { "source", "mqueue" },
                        { "options", json::array({ "nosuid", "noexec", "nodev" }) } } }) },
            // Runs in the VM once the process started: what tells the service it did. It reads
            // the state crun writes to its stdin first: a hook that ended before crun wrote it
            // made crun fail the run ("writing to pipe: Broken pipe"), now and then.
            { "hooks",
                json { { "poststart",
                    json::array({ json { { "path", "/bin/sh" },
                        { "args",
                            json::array({ "sh", "-c",
                                "while read -r _; do :; done; : >\"$0.flag\"; echo started >\"$0\"",
                                started_fifo }) } } }) } } },
            { "linux",
                json { { "namespaces", namespaces },
                    { "maskedPaths",
                        json::array(
                            { "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug" }) },
                    { "readonlyPaths",
                        json::array({ "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                            "/proc/sysrq-trigger" }) } } },
        };
        for (json& mount : volume_mounts)
            out["mounts"].push_back(std::move(mount));
        if (terminal && terminal->rows > 0 && terminal->columns > 0)
            out["process"]["consoleSize"]
                = json { { "height", terminal->rows }, { "width", terminal->columns } };
        return out;
    }

    // A container path a volume may be bound at: absolute, normalized, not the root.
    bool is_valid_container_path(const std::string& path)
    {
        if (path.size() < 2 || path.size() > 4096 || path[0] != '/' || path.back() == '/')
            return false;
        for (size_t start = 1; start < path.size();) {
            size_t end = path.find('/', start);
            std::string part = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
            if (part.empty() || part == "." || part == "..")
                return false;
            if (end == std::string::npos)
                break;
            start = end + 1;
        }
        return path.find('\0') == std::string::npos;
    }

    Result<ContainerRecord*> resolve_container(
        std::map<std::string, ContainerRecord>& all, const std::string& ref)
    {
        for (auto& [id, container] : all) {
            if (container.name == ref || id == ref)
                return &container;
        }
        if (ref.size() >= 4 && is_hex(ref)) {
            ContainerRecord* found = nullptr;
            for (auto& [id, container] : all) {
                if (id.compare(0, ref.size(), ref) == 0) {
                    if (found)
                        return Error { -EINVAL,
                            "the container id prefix '" + ref + "' names more than one container" };
                    found = &container;
                }
            }
            if (found)
                return found;
        }
        return Error { -ENOENT, "no such container: '" + ref + "'" };
    }

} // namespace

Result<ContainerSessions::FoundContainer> ContainerSessions::find_container(
    uid_t owner, const std::string& name, const std::string& ref)
{
    auto session = find(owner, name);
    if (!session)
        return session.take_error();
    auto container = resolve_container(session.value()->m_containers, ref);
    if (!container)
        return container.take_error();
    return FoundContainer { kj::mv(session.value()), container.value() };
}

kj::Promise<Result<std::pair<std::string, int>>> ContainerSessions::container_run(
    uid_t owner, const std::string& name, ContainerRunSpec spec, std::array<Fd, 3> stdio)
{
    using Outcome = Result<std::pair<std::string, int>>;
    auto found = find(owner, name);
    if (!found)
        return Outcome(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& s = *session;
    if (spec.command.size() + spec.env.size() > max_args)
        return Outcome(Error { -E2BIG, "the command and environment have more than 4096 entries" });
    for (const std::string& entry : spec.env) {
        if (entry.find('=') == std::string::npos || entry.front() == '=')
            return Outcome(
                Error { -EINVAL, "invalid environment entry '" + entry + "': it must be KEY=VALUE" });
    }
    if (spec.create_only && (!spec.detach || spec.remove))
        return Outcome(Error { -EINVAL, "create makes a detached container, without --rm" });
    if (!spec.name.empty() && !is_valid_container_name(spec.name))
        return Outcome(Error { -EINVAL,
            "invalid container name '" + spec.name
                + "': use 1 to 64 letters, digits, '_', '.' and '-', starting with a letter or digit" });
    auto image_id = resolve_image(s, spec.image, s.m_images, s.m_tags);
    if (!image_id)
        return Outcome(image_id.take_error());
    if (s.m_containers.size() >= max_containers)
        return Outcome(
            Error { -ENOSPC, "the session holds " + std::to_string(max_containers) + " containers already" });
    for (auto& [id, container] : s.m_containers) {
        if (!spec.name.empty() && container.name == spec.name)
            return Outcome(Error { -EEXIST, "a container named '" + spec.name + "' exists already" });
    }
    const ImageRecord& image = s.m_images.at(image_id.value());
    json config = image.inspect["Config"];
    if (!spec.command.empty())
        config["Cmd"] = spec.command;
    json env = config["Env"].is_array() ? config["Env"] : json::array();
    for (const std::string& entry : spec.env)
        env.push_back(entry);
    auto lacks = [&env](const char* prefix) {
        return std::none_of(env.begin(), env.end(), [prefix](const json& entry) {
            return entry.is_string() && entry.get<std::string>().rfind(prefix, 0) == 0;
        });
    };
    // An image without a PATH (an imported one, say) gets the one Docker and podman give it; a
    // terminal without a TERM, theirs (every image's terminfo knows it).
    if (lacks("PATH="))
        env.insert(env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    if (spec.terminal && lacks("TERM="))
        env.push_back("TERM=xterm");
    config["Env"] = env;
    config["Tty"] = spec.terminal.has_value();
    std::string user = config["User"];
    if (!user.empty() && user != "0" && user != "root" && user != "0:0")
        return Outcome(
            Error { -ENOTSUP, "the image runs as user '" + user + "'; only root images run for now" });
    size_t args = (config["Entrypoint"].is_array() ? config["Entrypoint"].size() : 0)
        + (config["Cmd"].is_array() ? config["Cmd"].size() : 0);
    if (args == 0)
        return Outcome(Error { -EINVAL, "image '" + spec.image + "' has no command; name one" });

    json mounts = json::array();
    for (const ContainerVolume& volume : spec.volumes) {
        if (!is_valid_container_path(volume.container_path))
            return Outcome(Error { -EINVAL,
                "invalid volume destination '" + volume.container_path
                    + "': it must be an absolute path, not /, without . or .." });
        mounts.push_back(json { { "Source", volume.host_path }, { "Destination", volume.container_path },
            { "RW", !volume.read_only } });
    }
    ContainerRecord record;
    record.id = random_hex(32);
    for (size_t i = 0; i < spec.volumes.size(); ++i)
        record.volume_mounts.push_back("/volumes/" + record.id + "/" + std::to_string(i));
    record.name = spec.name.empty() ? record.id.substr(0, 12) : spec.name;
    record.image_id = image_id.value();
    record.remove_when_ended = spec.detach && spec.remove; // an attached run removes it itself
    record.inspect = json { { "Id", record.id }, { "Name", record.name }, { "Created", now_rfc3339() },
        { "Image", spec.image }, { "ImageId", record.image_id },
        { "State",
            json { { "Status", "created" }, { "Running", false }, { "ExitCode", 0 }, { "StartedAt", never },
                { "FinishedAt", never } } },
        { "Config", config },
        { "HostConfig",
            json { { "NetworkMode", spec.network_none ? "none" : "host" },
                { "Memory", s.options.memory_mb << 20 },
                { "NanoCpus", uint64_t(s.options.cpu_millis) * 1000000 } } },
        { "Mounts", mounts } };
    // What plugins get must stay small (plugin hosts refuse hook text above 1 MiB), and so must
    // what the index keeps.
    record.bytes = record.inspect.dump().size();
    if (record.bytes > max_record_json)
        return Outcome(Error { -E2BIG,
            "the container's description (its image's config, command and environment) takes "
                + std::to_string(record.bytes) + " bytes: at most 64 KiB" });
    if (index_bytes(owner) + record.bytes > max_index_bytes_per_user)
        return Outcome(
            Error { -ENOSPC, "your images and containers take 1.5 MiB of the service's index: remove some" });
    std::string id = record.id;
    std::string dir = std::string("/storage/containers/") + id;
    json runtime = runtime_config(record, dir + "/rootfs", dir + "/started", spec.network_none,
        spec.terminal ? &*spec.terminal : nullptr);
    s.m_containers.emplace(id, std::move(record));
    bool detach = spec.detach;
    bool remove = spec.remove;
    std::optional<TerminalSpec> terminal = std::move(spec.terminal);

    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    return ensure_vm(s)
        .then(
            [this, &s, id, volumes = std::move(spec.volumes)](Status started) mutable -> kj::Promise<Status> {
                if (!started)
                    return kj::mv(started);
                return mount_volumes(s, id, std::move(volumes));
            })
        .then([this, &s, id, runtime = runtime.dump()](Status started) mutable -> kj::Promise<Status> {
            if (!started)
                return kj::mv(started);
            auto input = memfd_with("bulkhead-oci-config", runtime);
            if (!input)
                return Status(input.take_error());
            std::string hex = s.m_containers.at(id).image_id.substr(7);
            std::string what = "cannot create container '" + s.m_containers.at(id).name + "'";
            return in_store<bool>(s, [this, &s, id, hex, what, input = std::move(input.value())]() mutable {
                return run_tool(s, { "create", id, hex }, std::move(input), what)
                    .then([](Result<std::string> made) {
                        return made ? Result<bool>(true) : Result<bool>(made.take_error());
                    });
            }).then([](Result<bool> made) { return made ? Status() : Status(made.take_error()); });
        })
        .then([this, &s, id, stdio = std::move(stdio), terminal = std::move(terminal),
                  create_only = spec.create_only](Status created) mutable -> kj::Promise<Status> {
            if (!created) {
                // Nothing of it may stay: its directory went with the failed step or goes now.
                return delete_container(s, id).then(
                    [created = kj::mv(created)](Status) mutable { return kj::mv(created); });
            }
            auto it = s.m_containers.find(id);
            if (it != s.m_containers.end() && s.serving_vm())
                it->second.vm_init_pid = s.serving_vm()->init_pid();
            if (create_only)
                return Status();
            return start_container(s, id, std::move(stdio), std::move(terminal));
        })
        .then([this, &s, id, detach, remove](Status started) -> kj::Promise<Outcome> {
            if (!started)
                return Outcome(started.take_error());
            auto it = s.m_containers.find(id);
            if (detach || it == s.m_containers.end())
                return Outcome(std::make_pair(id, 0));
            KJ_IF_MAYBE (exited, it->second.exited) {
                return exited->addBranch().then([this, &s, id, remove](int ws) -> kj::Promise<Outcome> {
                    if (!remove)
                        return Outcome(std::make_pair(id, ws));
                    return delete_container(s, id).then(
                        [id, ws](Status) { return Outcome(std::make_pair(id, ws)); });
                });
            }
            return Outcome(std::make_pair(id, 0));
        })
        .attach(kj::mv(done), kj::mv(session));
}

// Starts a created container under `crun run` (its monitor: what ends with the container's
// process) and waits for its poststart hook; then on_container_started, whose veto ends it.
// Without stdio and terminal, detached: its output goes to its log.
kj::Promise<Status> ContainerSessions::start_container(ContainerSession& s, std::string id,
    std::array<Fd, 3> stdio, std::optional<TerminalSpec> terminal, bool again)
{
    VmInstance* vm = s.serving_vm();
    if (!vm)
        return Status(Error { BH_E_VM_NOT_RUNNING, "the session's VM stopped before the container started" });
    ContainerRecord& record = s.m_containers.at(id);
    bool detached = !terminal && !stdio[0] && !stdio[1] && !stdio[2];
    if (detached) {
        Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!null)
            return Status(Error::from_errno(errno, "cannot open /dev/null"));
        for (Fd& fd : stdio) {
            auto copy = copy_fd(null);
            if (!copy)
                return Status(copy.take_error());
            fd = std::move(copy.value());
        }
    }
    std::vector<std::string> argv { "sh", "-c", oci_helper, "bulkhead-oci", "run", id };
    if (detached)
        argv.push_back("log");
    if (terminal)
        argv.push_back("tty");
    ProgramSpec spec { "/bin/sh", std::move(argv), { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp" },
        "" };
    spec.cwd = "/";
    spec.terminal = std::move(terminal);
    if (spec.terminal) // crun makes the container's console, and hands it over
        spec.terminal->handed_over = true;
    // A VM that stops ends the container as SIGKILL would.
    auto exited = call_holding(*vm, [&](VmInstance& vm) {
        return vm.run("", std::move(spec), std::move(stdio));
    }).then([](Result<int> status) {
          return status ? status.value() : W_EXITCODE(0, SIGKILL);
      }).fork();
    auto ended_first = exited.addBranch().then([](int) { return false; });
    record.exited = kj::mv(exited);
    auto started_first = run_tool(s, { "started", id }, Fd(), "cannot learn whether the container started")
                             .then([](Result<std::string> said) { return said.ok(); });
    // A process that ends at once can end before the waiter saw the hook's line: then the flag
    // the hook left says whether it started.
    return started_first.exclusiveJoin(kj::mv(ended_first))
        .then([this, &s, id](bool started) -> kj::Promise<bool> {
            if (started)
                return true;
            return run_tool(s, { "has-started", id }, Fd(), "cannot learn whether the container started")
                .then([](Result<std::string> said) { return said.ok(); });
        })
        .then([this, &s, id, again](bool started) -> kj::Promise<Status> {
            auto it = s.m_containers.find(id);
            if (it == s.m_containers.end())
                return Status(Error { -ENOENT, "the container was removed while it started" });
            ContainerRecord& record = it->second;
            // Its monitor: the record's state follows the process, whatever happens next.
            ++s.m_active;
            KJ_IF_MAYBE (exited, record.exited) {
                m_tasks.add(exited->addBranch()
                                .then([this, &s, id](int ws) -> kj::Promise<void> {
                                    --s.m_active;
                                    arm_idle_timer(s);
                                    auto it = s.m_containers.find(id);
                                    if (it == s.m_containers.end())
                                        return kj::READY_NOW;
                                    json& state = it->second.inspect["State"];
                                    it->second.status = ContainerRecord::Status::exited;
                                    state["Status"] = "exited";
                                    state["Running"] = false;
                                    state["ExitCode"] = exit_code_of(ws);
                                    state["FinishedAt"] = now_rfc3339();
                                    // Its volumes are mounted only while it runs; run -d --rm's
                                    // container goes once it ended.
                                    bool remove = it->second.remove_when_ended;
                                    return release_volumes(s, id).then([this, &s, id, remove]() {
                                        return remove ? delete_container_files(s, id).ignoreResult()
                                                      : kj::Promise<void>(kj::READY_NOW);
                                    });
                                })
                                .attach(kj::addRef(s)));
            }
            if (!started) {
                std::string name = record.name;
                Error failed { -EIO,
                    "container '" + name
                        + "' did not start: its runtime (crun) failed (its error is above, or in the "
                          "container's log)" };
                if (again) // its files are the user's work: it stays, exited (its monitor saw the end)
                    return Status(std::move(failed));
                return delete_container(s, id).then(
                    [failed = std::move(failed)](Status) mutable { return Status(std::move(failed)); });
            }
            record.status = ContainerRecord::Status::running;
            record.inspect["State"]["Status"] = "running";
            record.inspect["State"]["Running"] = true;
            record.inspect["State"]["ExitCode"] = 0;
            record.inspect["State"]["StartedAt"] = now_rfc3339();
            return m_hooks.container_started(s, record.inspect.dump())
                .then([this, &s, id](Status accepted) -> kj::Promise<Status> {
                    if (accepted)
                        return kj::mv(accepted);
                    // A vetoed container ends and goes, with no on_container_stopping.
                    return end_container(s, id, SIGKILL)
                        .then([this, &s, id]() { return delete_container(s, id); })
                        .then([accepted = kj::mv(accepted)](Status) mutable { return kj::mv(accepted); });
                });
        });
}

// Sends `signal` to the container's process; with SIGKILL, returns once it ended.
kj::Promise<void> ContainerSessions::end_container(ContainerSession& s, std::string id, int signal)
{
    auto it = s.m_containers.find(id);
    if (it == s.m_containers.end() || it->second.status == ContainerRecord::Status::exited)
        return kj::READY_NOW;
    kj::Promise<void> ended = kj::READY_NOW;
    KJ_IF_MAYBE (exited, it->second.exited)
        ended = exited->addBranch().ignoreResult();
    return run_tool(s, { "kill", id, signal_name(signal) }, Fd(), "cannot signal the container")
        .then([signal, ended = kj::mv(ended)](Result<std::string> sent) mutable -> kj::Promise<void> {
            if (!sent)
                log_warning(sent.error().message);
            if (signal != SIGKILL || !sent)
                return kj::READY_NOW;
            return kj::mv(ended);
        });
}

// Mounts each volume's host folder in the VM (read-only ones locked so), where the container's
// config binds it from.
kj::Promise<Status> ContainerSessions::mount_volumes(
    ContainerSession& s, std::string id, std::vector<ContainerVolume> volumes)
{
    kj::Promise<Status> chain = Status();
    for (size_t i = 0; i < volumes.size(); ++i) {
        chain = chain.then(
            [this, &s, id, i, volume = std::move(volumes[i])](Status ok) mutable -> kj::Promise<Status> {
                if (!ok)
                    return kj::mv(ok);
                VmInstance* vm = s.serving_vm();
                auto it = s.m_containers.find(id);
                if (!vm || it == s.m_containers.end())
                    return Status(Error {
                        BH_E_VM_NOT_RUNNING, "the session's VM stopped before the volumes were mounted" });
                std::string path = it->second.volume_mounts.at(i);
                std::string what = "cannot mount the volume " + volume.host_path;
                return call_holding(*vm, [&](VmInstance& vm) {
                    return vm.mount(std::move(volume.folder), path, volume.read_only, "volume");
                }).then([what](Status mounted) {
                    return mounted
                        ? Status()
                        : Status(Error { mounted.error().code, what + ": " + mounted.error().message });
                });
            });
    }
    return chain;
}

// Unmounts the container's volumes from the VM (once it ended, or before it goes); the VM's own
// end takes them too.
kj::Promise<void> ContainerSessions::release_volumes(ContainerSession& s, std::string id)
{
    auto it = s.m_containers.find(id);
    if (it == s.m_containers.end() || it->second.volume_mounts.empty())
        return kj::READY_NOW;
    std::vector<std::string> paths = std::exchange(it->second.volume_mounts, {});
    VmInstance* vm = s.serving_vm();
    if (!vm)
        return kj::READY_NOW;
    auto unmounts = kj::heapArrayBuilder<kj::Promise<void>>(paths.size());
    for (const std::string& path : paths)
        unmounts.add(call_holding(*vm, [&](VmInstance& vm) {
            return vm.unmount(path);
        }).then([path](Status done) {
            if (!done)
                log_warning("cannot unmount the volume at " + path + " in the VM: " + done.error().message);
        }));
    return kj::joinPromises(unmounts.finish());
}

// Removes the container's volumes' mounts, runtime state, mount and files, then its record.
kj::Promise<Status> ContainerSessions::delete_container(ContainerSession& s, std::string id)
{
    return release_volumes(s, id).then([this, &s, id]() { return delete_container_files(s, id); });
}
kj::Promise<Status> ContainerSessions::delete_container_files(ContainerSession& s, std::string id)
{
    return in_store<bool>(s, [this, &s, id]() {
        return run_tool(s, { "delete", id }, Fd(), "cannot delete the container")
            .then([&s, id](Result<std::string> gone) {
                if (gone)
                    s.m_containers.erase(id);
                return gone ? Result<bool>(true) : Result<bool>(gone.take_error());
            });
    }).then([](Result<bool> gone) { return gone ? Status() : Status(gone.take_error()); });
}

Result<json> ContainerSessions::container_list(uid_t owner, const std::string& name, bool all)
{
    auto session = find(owner, name);
    if (!session)
        return session.take_error();
    json out = json::array();
    for (auto& [id, container] : session.value()->m_containers) {
        if (all || container.status == ContainerRecord::Status::running)
            out.push_back(container.inspect);
    }
    return out;
}

Result<json> ContainerSessions::container_inspect(
    uid_t owner, const std::string& name, const std::string& ref)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return found.take_error();
    return found->container->inspect;
}

kj::Promise<Status> ContainerSessions::container_stop(uid_t owner, const std::string& name,
    const std::string& ref, int signal, std::optional<uint32_t> timeout_s)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return Status(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found->session);
    ContainerSession& s = *session;
    ContainerRecord& record = *found->container;
    if (record.status != ContainerRecord::Status::running)
        return Status(); // stopping a stopped container is done already
    std::string id = record.id;
    kj::Promise<void> announced = kj::READY_NOW;
    if (!record.stopping_announced) {
        record.stopping_announced = true;
        announced = m_hooks.container_stopping(s, id);
    }
    return announced
        .then([this, &s, id, signal, timeout_s]() -> kj::Promise<void> {
            if (!timeout_s)
                return end_container(s, id, signal);
            auto it = s.m_containers.find(id);
            if (it == s.m_containers.end())
                return kj::READY_NOW;
            kj::Promise<void> ended = kj::READY_NOW;
            KJ_IF_MAYBE (exited, it->second.exited)
                ended = exited->addBranch().ignoreResult();
            return end_container(s, id, signal)
                .then([this, &s, id, timeout_s, ended = kj::mv(ended)]() mutable {
                    auto late = m_env.timer.afterDelay(*timeout_s * kj::SECONDS).then([this, &s, id]() {
                        log_info("container " + id.substr(0, 12) + " outlived its stop timeout; killing it");
                        return end_container(s, id, SIGKILL);
                    });
                    return ended.exclusiveJoin(kj::mv(late));
                });
        })
        .then([]() { return Status(); })
        .attach(kj::mv(session));
}

kj::Promise<Status> ContainerSessions::container_remove(
    uid_t owner, const std::string& name, const std::string& ref, bool force)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return Status(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found->session);
    ContainerSession& s = *session;
    ContainerRecord& record = *found->container;
    if (record.status == ContainerRecord::Status::running && !force)
        return Status(
            Error { -EBUSY, "container '" + record.name + "' is running: stop it first, or use -f" });
    if (record.starting)
        return Status(
            Error { -EBUSY, "container '" + record.name + "' is being started: remove it once it runs" });
    std::string id = record.id;
    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    kj::Promise<Status> stopped = Status();
    if (record.status == ContainerRecord::Status::running)
        stopped = container_stop(owner, name, id, SIGKILL, std::nullopt);
    return stopped
        .then([this, &s](Status stopped) -> kj::Promise<Status> {
            if (!stopped)
                return kj::mv(stopped);
            return ensure_vm(s);
        })
        .then([this, &s, id](Status ready) -> kj::Promise<Status> {
            if (!ready)
                return kj::mv(ready);
            return delete_container(s, id);
        })
        .attach(kj::mv(done), kj::mv(session));
}

// --- registries, exec, logs ---------------------------------------------------------------------

Result<json> ContainerSessions::image_tag(
    uid_t owner, const std::string& name, const std::string& source, const std::string& target)
{
    auto session = find(owner, name);
    if (!session)
        return session.take_error();
    ContainerSession& s = *session.value();
    auto id = resolve_image(s, source, s.m_images, s.m_tags);
    if (!id)
        return id.take_error();
    auto tag = normalize_reference(target);
    if (!tag)
        return tag.take_error();
    auto old = s.m_tags.find(tag.value());
    bool adds = old == s.m_tags.end() || old->second != id.value();
    if (adds && s.m_images.at(id.value()).tags().size() >= max_tags_per_image)
        return Error { -ENOSPC, "image " + id.value() + " has 64 tags already" };
    if (adds && index_bytes(owner) + tag_bytes > max_index_bytes_per_user)
        return Error { -ENOSPC,
            "your images and containers take 1.5 MiB of the service's index: remove some" };
    if (old != s.m_tags.end() && old->second != id.value()) {
        json& tags = s.m_images.at(old->second).inspect["RepoTags"];
        tags.erase(std::remove(tags.begin(), tags.end(), json(tag.value())), tags.end());
    }
    if (old == s.m_tags.end() || old->second != id.value()) {
        s.m_tags[tag.value()] = id.value();
        s.m_images.at(id.value()).inspect["RepoTags"].push_back(tag.value());
        index_changed(s);
    }
    return json { { "Id", id.value() }, { "Tag", tag.value() } };
}

kj::Promise<Result<json>> ContainerSessions::image_pull(
    uid_t owner, const std::string& name, const std::string& ref, bool insecure)
{
    auto found = find(owner, name);
    if (!found)
        return Result<json>(found.take_error());
    auto normal = normalize_reference(ref);
    if (!normal)
        return Result<json>(normal.take_error());
    if (insecure && !is_loopback_registry(normal.value()))
        return Result<json>(Error { -EINVAL,
            "--insecure is only for a registry on the session's loopback (localhost, 127.0.0.0/8, [::1]), "
            "not '"
                + normal.value() + "'" });
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& s = *session;
    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    std::string tls = insecure ? "false" : "true";
    return ensure_vm(s)
        .then([this, &s, ref = normal.value(), tls](Status started) -> kj::Promise<Result<json>> {
            if (!started)
                return Result<json>(started.take_error());
            return in_store<json>(s, [this, &s, ref, tls]() {
                return run_tool(s, { "pull", ref, tls }, Fd(), "cannot pull " + ref)
                    .then([this, &s](Result<std::string> printed) -> kj::Promise<Result<json>> {
                        if (!printed)
                            return Result<json>(printed.take_error());
                        return index_images(s, std::move(printed.value()));
                    });
            });
        })
        .attach(kj::mv(done), kj::mv(session));
}

kj::Promise<Status> ContainerSessions::image_push(
    uid_t owner, const std::string& name, const std::string& ref, bool insecure)
{
    auto found = find(owner, name);
    if (!found)
        return Status(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found.value());
    ContainerSession& s = *session;
    auto id = resolve_image(s, ref, s.m_images, s.m_tags);
    if (!id)
        return Status(id.take_error());
    auto normal = normalize_reference(ref);
    if (!normal || !s.m_tags.count(normal.value()))
        return Status(
            Error { -EINVAL, "push needs a reference of the form registry/name[:tag], not '" + ref + "'" });
    if (insecure && !is_loopback_registry(normal.value()))
        return Status(Error { -EINVAL,
            "--insecure is only for a registry on the session's loopback (localhost, 127.0.0.0/8, [::1]), "
            "not '"
                + normal.value() + "'" });
    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    std::vector<std::string> args { "push", id.value().substr(7), normal.value(),
        insecure ? "false" : "true" };
    std::string what = "cannot push " + normal.value();
    return ensure_vm(s)
        .then([this, &s, args = std::move(args), what](Status started) mutable -> kj::Promise<Status> {
            if (!started)
                return kj::mv(started);
            return run_tool(s, std::move(args), Fd(), what).then([](Result<std::string> pushed) {
                return pushed ? Status() : Status(pushed.take_error());
            });
        })
        .attach(kj::mv(done), kj::mv(session));
}

// The helper with the caller's stdio (a container's own, or what exec and logs attach).
kj::Promise<Result<int>> ContainerSessions::run_in_vm(ContainerSession& s, std::vector<std::string> args,
    std::array<Fd, 3> stdio, std::optional<TerminalSpec> terminal)
{
    VmInstance* vm = s.serving_vm();
    if (!vm)
        return Result<int>(Error { BH_E_VM_NOT_RUNNING, "the session's VM is not running" });
    for (Fd& fd : stdio) {
        if (fd)
            continue;
        fd = Fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!fd)
            return Result<int>(Error::from_errno(errno, "cannot open /dev/null"));
    }
    std::vector<std::string> argv { "sh", "-c", oci_helper, "bulkhead-oci" };
    argv.insert(argv.end(), args.begin(), args.end());
    ProgramSpec spec { "/bin/sh", std::move(argv), { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp" },
        "" };
    spec.cwd = "/";
    spec.terminal = std::move(terminal);
    if (spec.terminal) // crun makes the container's console, and hands it over
        spec.terminal->handed_over = true;
    return call_holding(*vm, [&](VmInstance& vm) { return vm.run("", std::move(spec), std::move(stdio)); });
}

kj::Promise<Result<int>> ContainerSessions::container_exec(uid_t owner, const std::string& name,
    const std::string& ref, std::vector<std::string> command, std::array<Fd, 3> stdio,
    std::optional<TerminalSpec> terminal)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return Result<int>(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found->session);
    ContainerSession& s = *session;
    ContainerRecord* container = found->container;
    if (container->status != ContainerRecord::Status::running)
        return Result<int>(Error { -EINVAL, "container '" + container->name + "' is not running" });
    if (command.empty() || command.size() > max_args)
        return Result<int>(Error { -EINVAL, "exec needs a program (and at most 4096 arguments)" });
    std::vector<std::string> args { "exec", container->id };
    if (terminal)
        args = { "exec-tty", container->id, std::to_string(std::max<uint16_t>(terminal->rows, 1)),
            std::to_string(std::max<uint16_t>(terminal->columns, 1)) };
    args.insert(args.end(), command.begin(), command.end());
    return run_in_vm(s, std::move(args), std::move(stdio), std::move(terminal)).attach(kj::mv(session));
}

kj::Promise<Status> ContainerSessions::container_start(
    uid_t owner, const std::string& name, const std::string& ref, std::vector<ContainerVolume> volumes)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return Status(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found->session);
    ContainerSession& s = *session;
    ContainerRecord& record = *found->container;
    if (record.status == ContainerRecord::Status::running)
        return Status(Error { -EINVAL, "container '" + record.name + "' is running already" });
    if (record.starting || (record.status == ContainerRecord::Status::created && record.exited != nullptr))
        return Status(Error { -EBUSY, "container '" + record.name + "' is being started already" });
    // Its overlay and volumes are mounted in the VM it was created in until its first end: a
    // created container of that VM starts as it is; any other is made ready again first.
    VmInstance* vm = s.serving_vm();
    bool ready
        = record.status == ContainerRecord::Status::created && vm && vm->init_pid() == record.vm_init_pid;
    if (!ready) {
        const json& mounts = record.inspect["Mounts"];
        bool same = volumes.size() == mounts.size();
        for (size_t i = 0; same && i < volumes.size(); ++i)
            same = volumes[i].host_path == mounts[i]["Source"].get<std::string>()
                && volumes[i].container_path == mounts[i]["Destination"].get<std::string>()
                && volumes[i].read_only == !mounts[i]["RW"].get<bool>();
        if (!same)
            return Status(Error { -EINVAL,
                "container '" + record.name + "' has " + std::to_string(mounts.size())
                    + " volumes: its start must bring its folders again, as its inspect names them "
                      "(bulkhead container start does, run by the container's owner)" });
    }
    std::string id = record.id;
    std::string hex = record.image_id.substr(7);
    record.starting = true;
    ++s.m_active;
    auto done = kj::defer([this, &s, id]() {
        --s.m_active;
        auto it = s.m_containers.find(id);
        if (it != s.m_containers.end())
            it->second.starting = false;
        arm_idle_timer(s);
    });
    if (ready)
        return start_container(s, id, {}, std::nullopt).attach(kj::mv(done), kj::mv(session));
    std::vector<std::string> paths;
    for (size_t i = 0; i < volumes.size(); ++i)
        paths.push_back("/volumes/" + id + "/" + std::to_string(i));
    return ensure_vm(s)
        .then([this, &s, id, hex](Status started) -> kj::Promise<Status> {
            if (!started)
                return kj::mv(started);
            // Its overlay mounted again where it is not (an earlier VM's), its poststart flag gone.
            std::string what = "cannot make container '" + s.m_containers.at(id).name + "' ready again";
            return in_store<bool>(s, [this, &s, id, hex, what]() {
                return run_tool(s, { "prepare", id, hex }, Fd(), what).then([](Result<std::string> made) {
                    return made ? Result<bool>(true) : Result<bool>(made.take_error());
                });
            }).then([](Result<bool> made) { return made ? Status() : Status(made.take_error()); });
        })
        .then([this, &s, id, paths, volumes = std::move(volumes)](
                  Status prepared) mutable -> kj::Promise<Status> {
            auto it = s.m_containers.find(id);
            if (!prepared || it == s.m_containers.end())
                return prepared ? Status(Error { -ENOENT, "the container was removed while it started" })
                                : kj::mv(prepared);
            it->second.volume_mounts = paths;
            it->second.vm_init_pid = s.serving_vm() ? s.serving_vm()->init_pid() : 0;
            return mount_volumes(s, id, std::move(volumes));
        })
        .then([this, &s, id](Status mounted) -> kj::Promise<Status> {
            if (!mounted)
                return release_volumes(s, id).then(
                    [mounted = kj::mv(mounted)]() mutable { return kj::mv(mounted); });
            auto it = s.m_containers.find(id);
            if (it == s.m_containers.end())
                return Status(Error { -ENOENT, "the container was removed while it started" });
            it->second.exited = nullptr;
            it->second.stopping_announced = false;
            return start_container(s, id, {}, std::nullopt, true);
        })
        .attach(kj::mv(done), kj::mv(session));
}

kj::Promise<Status> ContainerSessions::container_logs(
    uid_t owner, const std::string& name, const std::string& ref, std::array<Fd, 3> stdio, bool follow)
{
    auto found = find_container(owner, name, ref);
    if (!found)
        return Status(found.take_error());
    kj::Own<ContainerSession> session = kj::mv(found->session);
    ContainerSession& s = *session;
    stdio[0] = Fd();
    std::string id = found->container->id;
    ++s.m_active;
    auto done = kj::defer([this, &s]() {
        --s.m_active;
        arm_idle_timer(s);
    });
    return ensure_vm(s)
        .then(
            [this, &s, id, stdio = std::move(stdio), follow](Status started) mutable -> kj::Promise<Status> {
                if (!started)
                    return kj::mv(started);
                std::vector<std::string> args { "logs", id };
                if (follow)
                    args.push_back("follow");
                return run_in_vm(s, std::move(args), std::move(stdio)).then([](Result<int> status) {
                    if (!status)
                        return Status(status.take_error());
                    if (status.value() != 0)
                        return Status(Error {
                            -ENOENT, "the container has no log (only a detached container has one)" });
                    return Status();
                });
            })
        .attach(kj::mv(done), kj::mv(session));
}

} // namespace bh::service
