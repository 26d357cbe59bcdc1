// Work in flight that needs the CPU while a step computes: the data-parallel gradient
// all-reduces over MPI, whose messages move only while MPI is being called (Open MPI's TCP
// transport has no progress thread), so a bucket issued early in backward would otherwise sit
// until the step waits for it. The compute loops call progress() between blocks of work; it
// runs the hook that the calling thread set (MPI's funnelled thread, the OpenMP master) and
// does nothing on any other thread, or when no hook is set.
#pragma once

namespace primal {

namespace detail {
struct ProgressHook {
  void (*fn)(void*) = nullptr;
  void* context = nullptr;
};
inline thread_local ProgressHook progress_hook;
}  // namespace detail

// Sets this thread's hook: fn(context) runs on every progress() call on this thread.
inline void set_progress_hook(void (*fn)(void*), void* context) {
  detail::progress_hook = {fn, context};
}

// Removes this thread's hook if it is context's.
inline void clear_progress_hook(void* context) {
  if (detail::progress_hook.context == context) detail::progress_hook = {};
}

inline void progress() {
  const detail::ProgressHook& hook = detail::progress_hook;
  if (hook.fn) hook.fn(hook.context);
}

}  // namespace primal
