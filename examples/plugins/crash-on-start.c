/* crash-on-start: an example Bulkhead plugin with a fatal bug, to show what isolation contains.
 *
 * Its on_vm_started hook dereferences a NULL pointer. With isolation = "process" (the default)
 * only its bulkhead-pluginhost dies: the service latches the crash as this plugin's fatal error,
 * refuses VM creation with "A fatal error was returned by plugin '<name>'", lists the plugin as
 * crashed in `bulkhead status`, and keeps serving everything else. With isolation = "none" the
 * same bug kills bulkheadd itself. Never install this outside a demonstration. */

#include <bulkhead/plugin_api.h>

#include <stdio.h>

static int on_vm_started(const struct bh_session_info* session, const struct bh_vm_settings* settings)
{
    /* Both volatile: the compiler may neither drop the store as dead nor, knowing the pointer
     * is NULL, turn it into a trap instruction (SIGILL); the process dies of SIGSEGV exactly
     * as it would from a real NULL dereference. */
    volatile int* volatile nowhere = NULL;
    (void)settings;
    fprintf(stderr, "VM of %s started; about to dereference NULL\n", session->user_name);
    *nowhere = 42;
    return 0;
}

int BH_PLUGIN_ENTRY_V1(const struct bh_plugin_api_v1* api, struct bh_plugin_hooks_v1* hooks)
{
    BH_PLUGIN_REQUIRE_VERSION(0, 1, 0, api);
    hooks->on_vm_started = on_vm_started;
    return 0;
}
