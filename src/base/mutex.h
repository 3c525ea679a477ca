// Mutex, MutexLock and CondVar: the only locks in Bulkhead, with what they guard in the types.
//
// The annotations are Clang's thread-safety analysis (-Wthread-safety): a member declared
// BH_GUARDED_BY(m_mutex) may only be touched while m_mutex is held, a function declared
// BH_REQUIRES(m_mutex) only be called with it held, BH_EXCLUDES(m_mutex) only without. g++, which
// builds the project, ignores them; `make check-thread-safety` compiles every source with Clang
// and the analysis as errors, and fails on any std::mutex outside this file. The analysis does
// not follow a lock into a lambda: code that touches guarded state takes the lock in the
// function that touches it.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define BH_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define BH_THREAD_ANNOTATION(x)
#endif

#define BH_CAPABILITY(name) BH_THREAD_ANNOTATION(capability(name))
#define BH_SCOPED_CAPABILITY BH_THREAD_ANNOTATION(scoped_lockable)
#define BH_GUARDED_BY(mutex) BH_THREAD_ANNOTATION(guarded_by(mutex))
#define BH_PT_GUARDED_BY(mutex) BH_THREAD_ANNOTATION(pt_guarded_by(mutex))
#define BH_REQUIRES(...) BH_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define BH_ACQUIRE(...) BH_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define BH_RELEASE(...) BH_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define BH_EXCLUDES(...) BH_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

namespace bh {

// A std::mutex the analysis knows. Not recursive; never held across a call into plugin code or
// a wait for another thread (CondVar::wait aside).
class BH_CAPABILITY("mutex") Mutex {
public:
    void lock() BH_ACQUIRE() { m_mutex.lock(); }
    void unlock() BH_RELEASE() { m_mutex.unlock(); }

private:
    friend class CondVar;
    std::mutex m_mutex;
};

// Holds a Mutex for its scope.
class BH_SCOPED_CAPABILITY MutexLock {
public:
    explicit MutexLock(Mutex& mutex) BH_ACQUIRE(mutex)
        : m_mutex(mutex)
    {
        m_mutex.lock();
    }
    ~MutexLock() BH_RELEASE() { m_mutex.unlock(); }
    MutexLock(const MutexLock&) = delete;
    MutexLock& operator=(const MutexLock&) = delete;

private:
    Mutex& m_mutex;
};

// A condition variable waited on with its Mutex held: the caller loops on its own condition
// (`while (!ready) cond.wait(m_mutex);`), where the analysis sees the lock.
class CondVar {
public:
    void wait(Mutex& mutex) BH_REQUIRES(mutex)
    {
        std::unique_lock<std::mutex> held(mutex.m_mutex, std::adopt_lock);
        m_cond.wait(held);
        held.release(); // still locked: the caller's MutexLock unlocks it
    }
    // Any thread; best done after unlocking, so the woken thread does not block on the mutex.
    void notify_one() { m_cond.notify_one(); }
    void notify_all() { m_cond.notify_all(); }

private:
    std::condition_variable m_cond;
};

} // namespace bh
