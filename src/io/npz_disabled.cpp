// NPZ reading in a build configured with QUARRY_NPZ=OFF (no zip library): a clear error.
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

std::vector<std::string> npz_members(const std::string& path) {
  QUARRY_FAIL(path, ": this quarry was built without NPZ support (QUARRY_NPZ=OFF); "
              "save the array as .npy, or rebuild with libzip");
}

Array read_npz_member(const std::string& path, const std::string&) {
  npz_members(path);
  return {};
}

}  // namespace quarry
