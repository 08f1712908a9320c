// The files a dataset spec names (include/quarry/io.hpp), for the checks that no output
// overwrites an input; the datasets themselves are read by the loop (src/train/dataset.cpp).
#include <filesystem>
#include <string>
#include <vector>

#include "quarry/io.hpp"
#include "files.hpp"

namespace quarry {

namespace fs = std::filesystem;

namespace {
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

std::vector<std::string> dataset_files(const std::string& spec) {
  std::vector<std::string> out;
  std::error_code ec;
  auto add = [&](const std::string& f) {
    if (fs::is_regular_file(f, ec)) out.push_back(f);
  };
  if (starts_with(spec, "idx:")) {
    const fs::path dir(spec.substr(4));
    for (const char* base : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                             "t10k-labels-idx1-ubyte"})
      for (const std::string& f : {std::string(base), std::string(base) + ".gz"}) add((dir / f).string());
  } else if (starts_with(spec, "npz:")) {
    add(spec.substr(4));
  } else if (starts_with(spec, "npy:")) {
    const std::string rest = spec.substr(4);
    const std::size_t comma = rest.find(',');
    add(rest.substr(0, comma));
    if (comma != std::string::npos) add(rest.substr(comma + 1));
  } else if (starts_with(spec, "pool:")) {
    add(spec.substr(5));
  }
  return out;
}

}  // namespace quarry
