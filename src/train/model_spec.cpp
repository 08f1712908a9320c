// Model and committee specs of the command line (no LibTorch here).
#include <cstdlib>
#include <string>

#include "quarry/error.hpp"
#include "quarry/train.hpp"

namespace quarry {

ModelSpec parse_model_spec(const std::string& text) {
  ModelSpec m;
  if (text == "cnn") {
    m.kind = ModelSpec::Kind::cnn;
  } else if (text == "mlp") {
    m.kind = ModelSpec::Kind::mlp;
  } else if (text.rfind("torchscript:", 0) == 0 && text.size() > 12) {
    m.kind = ModelSpec::Kind::torchscript;
    m.path = text.substr(12);
  } else {
    QUARRY_USAGE_FAIL("unknown model '", quote_input(text), "': expected cnn, mlp or torchscript:FILE");
  }
  return m;
}

std::string model_spec_string(const ModelSpec& m) {
  switch (m.kind) {
    case ModelSpec::Kind::cnn: return "cnn";
    case ModelSpec::Kind::mlp: return "mlp";
    case ModelSpec::Kind::torchscript: return "torchscript:" + m.path;
  }
  return "?";
}

ModelSpec default_model(const Dataset& data) {
  ModelSpec m;
  m.kind = data.is_image() ? ModelSpec::Kind::cnn : ModelSpec::Kind::mlp;
  return m;
}

CommitteeSpec parse_committee(const std::string& text) {
  CommitteeSpec c;
  if (text == "none" || text.empty()) return c;
  const auto colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  QUARRY_USAGE_EXPECTS(colon != std::string::npos && (kind == "mc" || kind == "ensemble"),
                       "unknown committee '", quote_input(text), "': expected none, mc:M or ensemble:M");
  const std::string count = text.substr(colon + 1);
  char* end = nullptr;
  const long m = std::strtol(count.c_str(), &end, 10);
  const bool digits = !count.empty() && count.size() <= 4 &&
                      count.find_first_not_of("0123456789") == std::string::npos;
  QUARRY_USAGE_EXPECTS(digits && end && *end == '\0' && m >= 2 && m <= 1000, "committee '", quote_input(text),
                       "': M must be a whole number from 2 to 1000");
  c.kind = kind == "mc" ? CommitteeSpec::Kind::mc : CommitteeSpec::Kind::ensemble;
  c.members = static_cast<int>(m);
  return c;
}

std::string committee_string(const CommitteeSpec& c) {
  switch (c.kind) {
    case CommitteeSpec::Kind::none: return "none";
    case CommitteeSpec::Kind::mc: return "mc:" + std::to_string(c.members);
    case CommitteeSpec::Kind::ensemble: return "ensemble:" + std::to_string(c.members);
  }
  return "?";
}

}  // namespace quarry
