// quarry::Error and QUARRY_EXPECTS: the one error type every public function throws.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace quarry {

/// Thrown for every problem a user can act on: a bad file, a bad argument, a bad row.
/// The message names the file, the row and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

}  // namespace quarry

/// Throws quarry::Error with the concatenation of the remaining arguments when cond is false.
#define QUARRY_EXPECTS(cond, ...)                                         \
  do {                                                                    \
    if (!(cond)) throw ::quarry::Error(::quarry::detail::concat(__VA_ARGS__)); \
  } while (0)

/// Throws quarry::Error unconditionally.
#define QUARRY_FAIL(...) throw ::quarry::Error(::quarry::detail::concat(__VA_ARGS__))
