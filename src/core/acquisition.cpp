#include "quarry/acquisition.hpp"

#include "quarry/error.hpp"

namespace quarry {

namespace {
struct Entry {
  Acquisition a;
  const char* name;
};
constexpr Entry kTable[] = {
    {Acquisition::least_confidence, "least-confidence"},
    {Acquisition::margin, "margin"},
    {Acquisition::ratio, "ratio"},
    {Acquisition::entropy, "entropy"},
    {Acquisition::consensus_entropy, "consensus-entropy"},
    {Acquisition::bald, "bald"},
    {Acquisition::vote_entropy, "vote-entropy"},
    {Acquisition::kl_max, "kl-max"},
    {Acquisition::variation_ratio, "variation-ratio"},
    {Acquisition::egl, "egl"},
    {Acquisition::badge_norm, "badge-norm"},
};
}  // namespace

Acquisition parse_acquisition(std::string_view name) {
  std::string valid;
  for (const Entry& e : kTable) {
    if (name == e.name) return e.a;
    valid += valid.empty() ? "" : ", ";
    valid += e.name;
  }
  QUARRY_USAGE_FAIL("unknown acquisition '", quote_input(name), "'; expected one of: ", valid);
}

const char* acquisition_name(Acquisition a) {
  for (const Entry& e : kTable)
    if (e.a == a) return e.name;
  return "?";
}

const std::vector<Acquisition>& all_acquisitions() {
  static const std::vector<Acquisition> all = [] {
    std::vector<Acquisition> v;
    for (const Entry& e : kTable) v.push_back(e.a);
    return v;
  }();
  return all;
}

bool acquisition_needs_committee(Acquisition a) {
  switch (a) {
    case Acquisition::consensus_entropy:
    case Acquisition::bald:
    case Acquisition::vote_entropy:
    case Acquisition::kl_max:
    case Acquisition::variation_ratio: return true;
    default: return false;
  }
}

bool acquisition_needs_embeddings(Acquisition a) {
  return a == Acquisition::egl || a == Acquisition::badge_norm;
}

}  // namespace quarry
