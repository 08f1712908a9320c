// Progress of a long call (a diversity selection, training): one type for every call that reports.
#pragma once

#include <cstdint>
#include <functional>

namespace quarry {

/// `done` of `total` steps of `phase` are finished. The phases of each call are listed where
/// the call is declared (a string literal, valid for the life of the program).
struct Progress {
  const char* phase;
  std::int64_t done;
  std::int64_t total;
};

/// Called on the calling thread between steps. It may throw to cancel the call; the exception
/// propagates out of it.
using ProgressFn = std::function<void(const Progress&)>;

}  // namespace quarry
