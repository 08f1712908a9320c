// quarry::Error and QUARRY_EXPECTS: the one error type every public function throws.
#pragma once

#include <sstream>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace quarry {

/// Thrown for every problem a user can act on: a bad file, a bad argument, a bad row.
/// The message names the file, the row and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A bad argument rather than bad data: a flag's value out of range or of the wrong form, an
/// output that would overwrite an input. The command line exits with 2 for these, 1 for Error.
class UsageError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// User input fit to quote in a message: at most `max` characters, non-printable bytes as \xNN,
/// and "... (N bytes)" when cut, so that a 50 MB field or a binary blob stays one readable line.
std::string quote_input(std::string_view text, std::size_t max = 60);

/// The concatenation of the arguments: an error message.
template <class... Args>
std::string concat_error(Args&&... args) {
  return detail::concat(std::forward<Args>(args)...);
}

}  // namespace quarry

/// Throws quarry::Error with the concatenation of the remaining arguments when cond is false.
#define QUARRY_EXPECTS(cond, ...)                                         \
  do {                                                                    \
    if (!(cond)) throw ::quarry::Error(::quarry::detail::concat(__VA_ARGS__)); \
  } while (0)

/// Throws quarry::UsageError (exit code 2 on the command line) when cond is false.
#define QUARRY_USAGE_EXPECTS(cond, ...)                                               \
  do {                                                                                \
    if (!(cond)) throw ::quarry::UsageError(::quarry::detail::concat(__VA_ARGS__));   \
  } while (0)

/// Throws quarry::Error unconditionally.
#define QUARRY_FAIL(...) throw ::quarry::Error(::quarry::detail::concat(__VA_ARGS__))

/// Throws quarry::UsageError unconditionally.
#define QUARRY_USAGE_FAIL(...) throw ::quarry::UsageError(::quarry::detail::concat(__VA_ARGS__))
