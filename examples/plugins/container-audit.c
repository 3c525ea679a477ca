/* container-audit: an example Bulkhead plugin that watches the images and containers of container
 * sessions, and refuses containers whose name starts with "untrusted-".
 *
 * Every line it prints goes to stderr, which the service copies into its own log as
 * "plugin <name>: <line>". The image and container hooks get the JSON of the plugin API's spec
 * ("The JSON handed to hooks"); this plugin reads the few top-level string members it prints
 * with a small reader below, which skips nested objects, arrays and escapes correctly, so that an
 * image's labels or environment can never pass for its name. A real plugin would use a JSON
 * library.
 *
 * Build: see docs/plugin-authors.md. Only the public header is used. */

#include <bulkhead/plugin_api.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct bh_plugin_api_v1* g_api;

/* Past the JSON string starting at s (at its opening quote); NULL if it never ends. */
static const char* skip_string(const char* s)
{
    for (s++; *s; s++) {
        if (*s == '\\' && s[1])
            s++;
        else if (*s == '"')
            return s + 1;
    }
    return NULL;
}

/* Copies the top-level member `key` of the JSON object `json` into out when it is a string
 * without escapes (enough for ids, names and references); "?" otherwise. */
static const char* member(const char* json, const char* key, char* out, size_t size)
{
    size_t key_length = strlen(key);
    int depth = 0;
    const char* s = json;
    snprintf(out, size, "?");
    while (s && *s) {
        if (*s == '"') {
            const char* end = skip_string(s);
            const char* colon = end;
            while (colon && (*colon == ' ' || *colon == '\t' || *colon == '\n' || *colon == '\r'))
                colon++;
            /* A key at depth 1: a string followed by ':' */
            if (colon && depth == 1 && *colon == ':' && (size_t)(end - s - 2) == key_length
                && strncmp(s + 1, key, key_length) == 0) {
                const char* value = colon + 1;
                while (*value == ' ' || *value == '\t' || *value == '\n' || *value == '\r')
                    value++;
                const char* value_end = *value == '"' ? skip_string(value) : NULL;
                size_t length = value_end ? (size_t)(value_end - value - 2) : 0;
                if (value_end && length < size && !memchr(value + 1, '\\', length)) {
                    memcpy(out, value + 1, length);
                    out[length] = '\0';
                }
                return out;
            }
            s = end;
            continue;
        }
        if (*s == '{' || *s == '[')
            depth++;
        else if (*s == '}' || *s == ']')
            depth--;
        s++;
    }
    return out;
}

static int on_image_created(const struct bh_container_session_info* session, const char* inspect_json)
{
    char id[80];
    fprintf(stderr, "session '%s': image %s created\n", session->display_name,
        member(inspect_json, "Id", id, sizeof(id)));
    return 0;
}

static int on_image_deleted(const struct bh_container_session_info* session, const char* image_id)
{
    fprintf(stderr, "session '%s': image %s deleted\n", session->display_name, image_id);
    return 0;
}

static int on_container_started(const struct bh_container_session_info* session, const char* inspect_json)
{
    char name[80], image[256];
    member(inspect_json, "Name", name, sizeof(name));
    member(inspect_json, "Image", image, sizeof(image));
    if (strncmp(name, "untrusted-", 10) == 0) {
        fprintf(stderr, "session '%s': refusing container '%s' (image %s)\n", session->display_name, name, image);
        g_api->plugin_error("containers named untrusted-* are not allowed here");
        return -EPERM;
    }
    fprintf(stderr, "session '%s': container '%s' started from %s\n", session->display_name, name, image);
    return 0;
}

static int on_container_stopping(const struct bh_container_session_info* session, const char* container_id)
{
    fprintf(stderr, "session '%s': container %.12s stopping\n", session->display_name, container_id);
    return 0;
}

int BH_PLUGIN_ENTRY_V1(const struct bh_plugin_api_v1* api, struct bh_plugin_hooks_v1* hooks)
{
    BH_PLUGIN_REQUIRE_VERSION(0, 2, 0, api);
    g_api = api;
    hooks->on_image_created = on_image_created;
    hooks->on_image_deleted = on_image_deleted;
    hooks->on_container_started = on_container_started;
    hooks->on_container_stopping = on_container_stopping;
    return 0;
}
